import type { ErrorRecord } from '../jobs/shard-buffer.js';
import { enqueueWriteShard } from '../jobs/enqueue.js';
import type { BatchLine, EmbedBatchPayload } from '../jobs/payloads.js';
import type { EmbeddingClient, EmbeddingParameters, EmbeddingResult } from '../src/embedding.js';
import { ProviderRateLimitedError, ProviderRejectedError, ProviderUnavailableError, RequestInvalidError } from '../src/errors.js';
import { REJECTED_SHARD_FRACTION, REJECTED_STREAK_LIMIT } from '../jobs/shard-buffer.js';
import { SystematicRejectionError } from '../jobs/job-errors.js';
import { embeddingParameters } from '../src/job-options.js';
import type { Logger } from '../src/logger.js';
import type { RateGate } from '../src/rate/rate-gate.js';
import { sleep } from '../src/sleep.js';
import { encodeBatch } from '../src/shards/batch-codec.js';
import type { ShardRow } from '../src/shards/shard-row.js';
import { estimateTokens } from '../src/tokens/count-tokens.js';
import { corpusOptions } from './corpus-options.js';
import { HandBackLaterError, type JobContext } from './run-job.js';
import { JobStoppedError } from './stop-watch.js';

/** How an embed step meets 429s that keep coming. */
export interface ThrottlePolicy {
  /**
   * 429s a step absorbs in process, each after slowing the shared gate, before it is handed back
   * to its queue (Default: 20).
   */
  retries: number;
  /**
   * How long a handed-back step waits in its queue, holding no worker slot, when the 429 carried no
   * `Retry-After` (Default: 10,000 ms, ±50% jitter so the steps of a storm do not return together).
   */
  handBackMs: number;
}

/**
 * A 429 says "later", not "broken", so 429s use no attempt, however long they last: a storm (another
 * application saturating the account, DashScope's capacity throttling) can outlast the ~10 minutes
 * the 14 attempts span. Before, the 21st 429 went back to BullMQ as a failed attempt, and a storm of
 * about 10 minutes failed the corpus job (`PROVIDER_RATE_LIMITED: … gave up after 14 attempts`).
 */
export const DEFAULT_THROTTLE_POLICY: Readonly<ThrottlePolicy> = Object.freeze({ retries: 20, handBackMs: 10_000 });

/**
 * Quick in-call retries of a 5xx, timeout or reset before the whole job goes back to BullMQ's
 * backoff. They matter most while bisecting a rejected batch: that takes ~8 requests, and
 * restarting all of them for one passing 500 could keep a batch from ever finishing.
 */
const QUICK_RETRIES = 2;
const QUICK_RETRY_BASE_MS = 250;

export interface EmbeddedLines {
  rows: ShardRow[];
  errors: ErrorRecord[];
  tokens: number;
  /** Wall time of the successful DashScope calls (gate waits excluded), for latency figures. */
  requestMs: number;
}

/**
 * One DashScope request of at most 10 lines: embed, place each vector at its global row, store the
 * batch once in the shard's buffer, and queue the shard's writer when this was its last batch.
 */
export async function embedBatch(payload: EmbedBatchPayload, context: JobContext, throttling: ThrottlePolicy = DEFAULT_THROTTLE_POLICY): Promise<void> {
  // context.logger is read only when something is logged: the job's child logger is built on first use.
  const { services } = context;
  const { corpora, queues } = services;
  const id = payload.corpusJobId;
  const generation = payload.generation;
  const status = await corpora.buffers.batchStatus(id, generation, payload.shard, payload.batch);
  if (status === 'complete') await enqueueWriteShard(queues.write, id, generation, payload.shard);
  // Cancelled, failed, lost, or an earlier generation: so are this generation's other queued steps.
  if (status === 'inactive') services.stoppedSteps.noteStopped(id, generation, context.logger);
  // inactive, written, or stored by an earlier attempt
  if (status !== 'pending') return;

  const options = await corpusOptions(corpora, id);
  const parameters = embeddingParameters(options);
  const started = performance.now();
  const stop = services.stopWatch.watch(id, generation);
  let embedded: EncodedLines;
  try {
    embedded = encodeLines(await embedLines(payload.lines, {
      client: services.embeddings,
      gate: services.rateGate(options.model),
      parameters,
      get logger() {
        return context.logger;
      },
      signal: stop.signal,
      stopping: context.stopping,
      priority: context.priority,
      corpusJobId: id,
      throttling,
    }), options.dimension);
  } catch (error) {
    if (error instanceof JobStoppedError) {
      context.logger.debug({ shard: payload.shard, batch: payload.batch }, 'batch abandoned: job stopped');
      services.stoppedSteps.noteStopped(id, generation, context.logger);
      return;
    }
    throw error;
  } finally {
    stop.done();
  }
  const rejected = embedded.errors.filter((record) => record.code === 'PROVIDER_REJECTED').length;
  const progress = await corpora.buffers.storeBatch(id, generation, payload.shard, payload.batch, embedded.encoded, embedded.errors, {
    embedded: embedded.rows,
    tokens: embedded.tokens,
    rejected,
    shardRows: options.shardRows,
  });
  if (progress === 'too-many-rejected') {
    throw new SystematicRejectionError(
      `the provider rejected too many lines without a reason tied to their content (${REJECTED_STREAK_LIMIT} in a row, or over ${REJECTED_SHARD_FRACTION * 100}% of a shard); the cause is likely the request setup, a proxy or the endpoint, not the lines. Last: ${embedded.errors.at(-1)?.message ?? ''}`,
    );
  }
  if (progress === 'open' || progress === 'complete') services.metrics.batchStored({ embedded: embedded.rows, tokens: embedded.tokens });
  if (services.logger.isLevelEnabled('debug')) {
    context.logger.debug(
      {
        shard: payload.shard,
        batch: payload.batch,
        rows: embedded.rows,
        failed: embedded.errors.length,
        tokens: embedded.tokens,
        requestMs: Math.round(embedded.requestMs),
        durationMs: Math.round(performance.now() - started),
      },
      'batch embedded',
    );
  }
  if (progress === 'complete') await enqueueWriteShard(queues.write, id, generation, payload.shard);
}

/** A batch's rows in their Redis form, with what is told about them. */
interface EncodedLines {
  encoded: Buffer;
  rows: number;
  errors: ErrorRecord[];
  tokens: number;
  requestMs: number;
}

/**
 * Encodes the rows at once and keeps only the bytes: the rows themselves (a Float32Array and ~100
 * sparse entries a line) then die young, instead of surviving the store's Redis round trip and
 * being promoted to the old generation (~10 KB a line, measured with --trace-gc: the worker's GC
 * threads used about a quarter of its CPU).
 */
function encodeLines(embedded: EmbeddedLines, dimension: number): EncodedLines {
  const { rows, errors, tokens, requestMs } = embedded;
  return { encoded: encodeBatch(rows, dimension), rows: rows.length, errors, tokens, requestMs };
}

interface EmbedDeps {
  client: EmbeddingClient;
  gate: RateGate;
  parameters: EmbeddingParameters;
  logger: Logger;
  /** Aborts when the corpus job stops (cancel, failure, retry): waits, requests and retries end at once. */
  signal?: AbortSignal | undefined;
  /**
   * Aborts when this worker drains (run-job.ts): no new wait for a slot starts (callers already
   * queued are released by the pool), so the job goes back to the queue. A request in flight runs
   * to its end: it is paid for. Rows of a bisected batch's finished halves are embedded again.
   */
  stopping?: AbortSignal | undefined;
  /** For the job's request and 429 counts (metrics). */
  corpusJobId?: string | undefined;
  /** The step's BullMQ priority: callers of a higher one (a smaller number) get gate slots first. */
  priority?: number | undefined;
  /** When 429s that keep coming hand the step back to its queue (Default: DEFAULT_THROTTLE_POLICY). */
  throttling?: ThrottlePolicy | undefined;
}

/**
 * Embeds lines; a batch the provider rejects for its content (moderation, one invalid input) is
 * bisected until the offending line stands alone, so only it becomes an error record and the
 * others are embedded.
 */
export async function embedLines(lines: readonly BatchLine[], deps: EmbedDeps): Promise<EmbeddedLines> {
  try {
    const { result, requestMs } = await callThroughGate(lines.map((line) => line.text), deps);
    const rows = lines.map((line, index): ShardRow => {
      const item = result.items[index]!;
      return {
        row: line.row,
        source: line.source,
        line: line.line,
        id: line.id,
        text: line.text,
        dense: item.dense,
        sparse: item.sparse,
        contentHash: line.hash ?? null,
        ...(line.upsert ? { upsert: true } : {}),
      };
    });
    return { rows, errors: [], tokens: result.totalTokens, requestMs };
  } catch (error) {
    // Refused by the provider, or by the client's own checks: either way about these lines.
    if (!(error instanceof ProviderRejectedError || error instanceof RequestInvalidError)) throw error;
    if (lines.length === 1) {
      const line = lines[0]!;
      const { providerCode, requestId } = error instanceof ProviderRejectedError ? error.failure : {};
      deps.logger.info({ row: line.row, code: error.code, providerCode, requestId }, 'line rejected by provider');
      // The record leaves out the request id (it is in the log line above) so re-runs write identical files;
      // it names the file and line first, as the reader's records do (`source:line: reason`, lines from 1).
      const reason = requestId ? error.message.replace(` (request_id ${requestId})`, '') : error.message;
      const message = `${line.source}:${line.line + 1}: ${reason}`;
      // The id lets the next `--reuse` run know the id (the store keeps its older vector) and the operator reconcile.
      const record: ErrorRecord = { row: line.row, source: line.source, line: line.line, ...(line.id !== null ? { id: line.id } : {}), code: error.code, message };
      return { rows: [], errors: [record], tokens: 0, requestMs: 0 };
    }
    const middle = Math.ceil(lines.length / 2);
    const first = await embedLines(lines.slice(0, middle), deps);
    const second = await embedLines(lines.slice(middle), deps);
    return {
      rows: [...first.rows, ...second.rows],
      errors: [...first.errors, ...second.errors],
      tokens: first.tokens + second.tokens,
      requestMs: first.requestMs + second.requestMs,
    };
  }
}

async function callThroughGate(texts: string[], deps: EmbedDeps): Promise<{ result: EmbeddingResult; requestMs: number }> {
  // deps.logger is read only when logging (it may be built on first use).
  const { client, gate, parameters, signal, corpusJobId } = deps;
  const estimate = texts.reduce((sum, text) => sum + estimateTokens(text), 0);
  let throttled = 0;
  let unavailable = 0;
  for (;;) {
    signal?.throwIfAborted();
    deps.stopping?.throwIfAborted();
    const slot = await gate.acquire(estimate, signal, deps.priority);
    const sent = performance.now();
    try {
      const result = await client.embed(texts, parameters, { signal, corpusJobId });
      const requestMs = performance.now() - sent;
      gate.completed(estimate, result.totalTokens, slot.slotMs);
      return { result, requestMs };
    } catch (error) {
      // A rejected request used no quota: give the reserved tokens back.
      gate.refused(estimate);
      if (signal?.aborted) throw signal.reason as Error;
      if (error instanceof ProviderUnavailableError && unavailable < QUICK_RETRIES) {
        unavailable += 1;
        deps.logger.debug({ err: error, retry: unavailable }, 'provider unavailable; retrying at once');
        await sleep(QUICK_RETRY_BASE_MS * unavailable * (0.5 + Math.random()), signal);
        continue;
      }
      if (!(error instanceof ProviderRateLimitedError)) throw error;
      throttled += 1;
      // Every 429 teaches the gate, the last before a hand-back too.
      const verdict = await gate.throttled(error.kind, estimate);
      const { logger } = deps;
      // A probe that found the same limit again is routine (every 16-60 s): not a warning.
      if (verdict.action === 'cut' && verdict.confirmed) logger.info(verdict, 'rate limit confirmed: a probe above it met a 429');
      if (verdict.action === 'cut' && !verdict.confirmed) logger.warn(verdict, 'rate limit learned');
      if (verdict.action === 'nudge') logger.info(verdict, 'rate limit lowered: 429s keep coming');
      if (verdict.action === 'dip') logger.info(verdict, 'rate limit lowered: 429s went on at the floor; listening at half of it');
      if (verdict.action === 'restore') logger.info(verdict, 'rate limit restored: lowering it did not stop the 429s');
      logger.debug({ kind: error.kind, requestId: error.failure.requestId, ...(verdict.action === 'skip' ? { reason: verdict.reason } : {}) }, 'rate limited; slot skipped');
      const policy = deps.throttling ?? DEFAULT_THROTTLE_POLICY;
      if (throttled > policy.retries) throw handBack(error, throttled, policy);
      if (error.retryAfterMs !== undefined) await sleep(error.retryAfterMs, signal);
    }
  }
}

/**
 * After `policy.retries` 429s the step goes back to its queue for a while, with no attempt used
 * (run-job.ts): its worker slot is free meanwhile for steps of other jobs or models, the gate goes
 * on pacing the requests still sent, and a cancel finds it there (it ends at its next start).
 */
function handBack(error: ProviderRateLimitedError, throttled: number, policy: ThrottlePolicy): HandBackLaterError {
  const delayMs = error.retryAfterMs ?? Math.round(policy.handBackMs * (0.5 + Math.random()));
  return new HandBackLaterError(delayMs, `rate-limited: refused ${throttled} times (429)`, { cause: error });
}
