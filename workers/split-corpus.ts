import type { CorpusJobRecord } from '../jobs/job-record.js';
import type { ErrorRecord } from '../jobs/shard-buffer.js';
import { enqueueEmbedBatches, enqueueFinalize, enqueueWriteShard } from '../jobs/enqueue.js';
import { assertNoOtherJobsRun } from '../jobs/output-files.js';
import type { BatchLine, EmbedBatchPayload, SplitCorpusPayload } from '../jobs/payloads.js';
import { embedQueue } from '../jobs/queues.js';
import { placeLine, type BatchSlot } from '../src/corpus/batching.js';
import { listCorpus } from '../src/corpus/list-corpus.js';
import { READ_AHEAD, readAhead } from '../src/corpus/read-ahead.js';
import { formatOf, plainTextWarning, readCorpusLines, type CorpusLine } from '../src/corpus/read-lines.js';
import { UnreadableInput } from '../src/corpus/unreadable-input.js';
import { embeddingParameters } from '../src/job-options.js';
import { MODELS, textTokenLimit } from '../src/models.js';
import { contentKey } from '../src/reuse/content-key.js';
import { sleep } from '../src/sleep.js';
import { SUCCESS_FILE } from '../src/output/layout.js';
import { mayExceedTokens } from '../src/tokens/count-tokens.js';
import { fitTokensOffThread } from '../src/tokens/token-worker.js';
import { openOutput } from './output.js';
import type { JobContext } from './run-job.js';
import type { Services } from './services.js';
import { SplitReuse } from './split-reuse.js';
import { stepFence } from './step-fence.js';

/** Embed jobs added per Redis round trip. */
const ENQUEUE_CHUNK = 200;
/** How often the producer looks whether an open shard was written (backpressure). */
const ROOM_POLL_MS = 200;

/**
 * The producer: streams the corpus line by line and turns it into embed jobs of at most 10 lines,
 * shard by shard. It is itself a job, so a crash resumes through BullMQ's retry: shards already
 * written are skipped, and re-adding a shard's batches is harmless (deterministic job ids, results
 * stored once).
 *
 * Backpressure: shard k is not started until at most `maxOpenShards - 1` earlier shards are
 * unwritten, so waiting jobs and buffered vectors in Redis stay bounded by
 * `maxOpenShards × shardRows` lines, whatever the corpus size.
 */
export async function splitCorpus(payload: SplitCorpusPayload, context: JobContext): Promise<void> {
  const { services, logger } = context;
  const id = payload.corpusJobId;
  const generation = payload.generation;
  const record = await services.corpora.get(id);
  if (!record || !(await services.corpora.jobs.markRunning(id, generation))) {
    logger.info({ state: record?.state, generation: record?.generation }, 'split skipped: job not active in this generation');
    return;
  }
  // At most one index per job: this split is the job's only reader of the previous output.
  const reuse = await SplitReuse.open(services, record, generation, logger);
  try {
    await split(payload, context, record, reuse);
  } finally {
    reuse?.release();
  }
}

async function split(payload: SplitCorpusPayload, { services, logger, stopping }: JobContext, record: CorpusJobRecord, reuse: SplitReuse | undefined): Promise<void> {
  const { corpora, queues, settings } = services;
  const id = payload.corpusJobId;
  const generation = payload.generation;
  const options = record.options;
  const parameters = embeddingParameters(options);
  const maxTokens = textTokenLimit(options.model);
  const shardRows = options.shardRows;
  const limits = { shardRows, maxTextsPerRequest: MODELS[options.model].maxTextsPerRequest };
  const output = openOutput(options.output, services);
  await assertNoOtherJobsRun(output, id, options.output);
  // Checked again before the split writes or deletes in the output: it may have been paused past its lock.
  const fence = stepFence(corpora, id, generation);
  // A previous run's marker must not vouch for files this run is about to replace.
  await fence();
  await output.store.delete(output.prefix + SUCCESS_FILE);

  let row = 0;
  let shard = -1;
  let shardSkipped = false;
  let slot: BatchSlot | undefined;
  let batch: BatchLine[] = [];
  let pending: EmbedBatchPayload[] = [];
  /** Batches this split queued before `pending`: a job's first ones go ahead of older jobs' (embedPriority). */
  let batchesQueued = 0;
  let blank = 0;
  let truncated = 0;
  let inputErrors: ErrorRecord[] = [];
  const readable = new UnreadableInput(options.textField);
  let stopped = false;
  let lastProgressAt = Date.now();

  const flushBatch = (): void => {
    if (batch.length === 0 || !slot) return;
    pending.push({ v: 1, corpusJobId: id, generation, shard: slot.shard, batch: slot.batch, lines: batch });
    batch = [];
  };
  /** Batches the shard has: the last slot's batch + 1 (0 when no line of the shard was embeddable). */
  const batchesOfShard = (): number => (slot && slot.shard === shard ? slot.batch + 1 : 0);
  /** Lines read so far, for status and the dashboard while the total is unknown. */
  const reportLinesRead = async (): Promise<void> => {
    lastProgressAt = Date.now();
    await corpora.jobs.setLinesRead(id, generation, row);
  };
  const flushPending = async (): Promise<void> => {
    // Before the batches go out: workers may embed them at once, and "read" must not trail "embedded"
    // (it did for as long as the split waited for room, minutes on a slow quota).
    await reportLinesRead();
    await enqueueEmbedBatches(queues[embedQueue(options.model)], pending, batchesQueued);
    batchesQueued += pending.length;
    pending = [];
  };

  const openShard = async (next: number): Promise<void> => {
    shard = next;
    blank = 0;
    truncated = 0;
    inputErrors = [];
    shardSkipped = await corpora.ledger.isWritten(id, shard);
    if (shardSkipped) return;
    // Wait for room: at most maxOpenShards shards (this one included) unwritten at once.
    while ((await corpora.ledger.writtenCount(id)) < shard + 1 - settings.worker.maxOpenShards) {
      // Stopped, or a later generation; or the ledger is gone from Redis, and the room never comes.
      if (!(await corpora.buffers.checkWhole(id, generation, shard))) {
        stopped = true;
        return;
      }
      // A draining worker embeds nothing more, so the room may never come here: the split goes
      // back to the queue and another worker resumes it (written shards skipped, the open ones'
      // batches added again as no-ops), instead of holding the drain until it times out.
      stopping.throwIfAborted();
      await sleep(ROOM_POLL_MS);
    }
  };

  const closeShard = async (endRow: number): Promise<void> => {
    if (shardSkipped) return;
    flushBatch();
    await flushPending();
    // Only embed batches are expected: a shard whose lines are all reused has none, and is complete at once.
    const expectedBatches = batchesOfShard();
    const progress = await corpora.buffers.closeShard(id, generation, shard, {
      ...reuse?.closeShard(),
      expectedBatches,
      blank,
      truncated,
      inputErrors,
      firstRow: shard * shardRows,
      lastRow: endRow - 1,
    });
    logger.debug({ shard, batches: expectedBatches, progress }, 'shard split');
    if (progress === 'inactive') stopped = true;
    if (progress === 'complete') await enqueueWriteShard(queues.write, id, generation, shard);
  };

  /**
   * One line. `idsOnly`: the shard is already written (a retried split), so the line only marks
   * its id as seen for the delta's deletes; it was counted when the shard was split before.
   */
  const take = async (line: CorpusLine, idsOnly: boolean): Promise<void> => {
    if (line.kind === 'blank') {
      if (!idsOnly) blank += 1;
      return;
    }
    if (line.kind === 'error') {
      readable.refused(line);
      const unreadable = readable.problem(false);
      if (unreadable) throw unreadable;
      if (!idsOnly) inputErrors.push({ row, source: line.source, line: line.line, ...(line.id !== undefined ? { id: line.id } : {}), code: line.code, message: line.message });
      return;
    }
    readable.readable();
    let text = line.text;
    if (mayExceedTokens(text, maxTokens)) {
      const fit = await fitTokensOffThread(text, maxTokens); // a worker thread: long lines take seconds
      if (fit.exceeded) {
        if (options.longLines === 'error') {
          const message = `${line.source}:${line.line + 1}: text has ${fit.exact ? '' : 'more than '}${fit.exact ? fit.tokens : maxTokens} tokens; ${options.model} takes at most ${maxTokens}`;
          if (!idsOnly) inputErrors.push({ row, source: line.source, line: line.line, ...(line.id !== null ? { id: line.id } : {}), code: 'TEXT_TOO_LONG', message });
          return;
        }
        text = fit.text;
        if (!idsOnly) truncated += 1;
      }
    }
    // Every row gets its content key, so the next `--reuse` run can match it.
    const key = contentKey(text, parameters);
    const kind = reuse?.classify(line.id, key);
    if (idsOnly) return;
    const upsert = kind === 'new' || kind === 'changed';
    if (reuse?.take({ row, source: line.source, line: line.line, id: line.id, hash: key, upsert }, kind)) return;
    const next = placeLine(slot, row, limits);
    if (next.position === 0) flushBatch();
    slot = next;
    batch.push({ row, source: line.source, line: line.line, id: line.id, text, hash: key.toString('hex'), ...(upsert ? { upsert } : {}) });
    if (pending.length >= ENQUEUE_CHUNK) await flushPending();
  };

  /** Moves past rows that are all in written shards without reading them, as the line loop would. */
  const stepOver = async (end: number): Promise<void> => {
    readable.steppedOver();
    while ((shard + 1) * shardRows < end) {
      await closeShard((shard + 1) * shardRows);
      await openShard(shard + 1);
      if (stopped) return;
    }
    row = end;
  };

  // Not when the delta tracks ids: it must see every line's id.
  const recordStarts = !reuse?.tracksIds;
  const written = recordStarts ? await objectsInWrittenShards(corpora, id, shardRows) : NOTHING_WRITTEN;

  await openShard(0);
  // Skipping written shards by row number is right only over the corpus read before: each object
  // is checked against the version this job read there, if it read one (jobs/corpus-pins.ts).
  let objectsRead = 0;
  let jsonLinesObjects = 0;
  const listing = listCorpus(options.input, { s3Client: options.input.startsWith('s3://') ? services.s3() : undefined, output: options.output });
  const wanted = (index: number): boolean => written.rowsOf(index) === undefined && written.resumeIn(index) === undefined;
  outer: for await (const object of readAhead(listing, READ_AHEAD, wanted)) {
    const index = objectsRead++;
    if ((options.format ?? formatOf(object.key)) === 'jsonl') jsonLinesObjects += 1;
    const firstRow = row;
    const verify = (version: string): Promise<void> => corpora.pins.check(id, index, object, version, firstRow);
    const rows = written.rowsOf(index);
    if (rows && row === rows.start) {
      // The listing names each object's version (S3 lists ETags), so this costs no request.
      const version = object.version ?? (await object.store.stat(object.key))?.version;
      if (version !== undefined) {
        await verify(version);
        await stepOver(rows.end);
        if (stopped) break;
        continue;
      }
    }
    // The first unwritten shard starts inside this object: read it from there (a ranged GET), as
    // long as the object's lines before it are the rows before it.
    const resume = written.resumeIn(index);
    let from: { offset: number; line: number } | undefined;
    if (resume && resume.row - row === resume.line) {
      // Checked first by its listed version: a rewritten object may be shorter than the offset.
      const version = object.version ?? (await object.store.stat(object.key))?.version;
      if (version !== undefined) await verify(version);
      await stepOver(resume.row);
      if (stopped) break;
      from = { offset: resume.offset, line: resume.line };
    }
    const read = { format: options.format, textField: options.textField, idField: options.idField, verify, from, offsets: recordStarts };
    for await (const line of readCorpusLines(object, read)) {
      if (stopped) break outer;
      if (row === (shard + 1) * shardRows) {
        await closeShard(row);
        await openShard(shard + 1);
        if (stopped) break outer;
        // Mid-object (offset > 0) in an object read by offsets: where a resumed split can start.
        if (line.offset && !shardSkipped) await corpora.pins.recordShardStart(id, shard, { object: index, offset: line.offset, line: line.line });
      }
      if (!shardSkipped || reuse?.tracksIds) await take(line, shardSkipped);
      row += 1;
      if (Date.now() - lastProgressAt > 1_000) await reportLinesRead();
    }
  }
  if (stopped) {
    logger.info({ row }, 'split stopped: job no longer active');
    return;
  }
  const unreadable = readable.problem(true);
  if (unreadable) throw unreadable;
  await corpora.pins.checkCount(id, options.input, objectsRead);
  // The other objects' ends were recorded as the next one was pinned.
  if (objectsRead > 0) await corpora.pins.recordEnd(id, objectsRead - 1, row);
  // The last shard holds the rows after the last boundary; an empty corpus has no shard.
  const totalShards = Math.ceil(row / shardRows);
  if (row > shard * shardRows) await closeShard(row);
  if (stopped) return;
  // Before the split is recorded as finished (finalize may follow at once): the ids gone.
  if (reuse) await fence();
  const deleted = await reuse?.writeDeletes(services, options, row);
  if (deleted !== undefined) await corpora.jobs.setReuse(id, generation, { rowsDeleted: deleted });
  const totals = await corpora.jobs.finishSplit(id, generation, { totalLines: row, totalShards });
  logger.info({ lines: row, shards: totalShards }, 'corpus split');
  // Refused at submit only with --format text: a prefix may hold JSON Lines objects later.
  const plainText = objectsRead > 0 && jsonLinesObjects === 0 ? plainTextWarning(options) : undefined;
  if (plainText) logger.warn({ textField: options.textField, idField: options.idField, objects: objectsRead }, plainText);
  if (totals && totals.shardsWritten === totals.totalShards) await enqueueFinalize(queues.write, id, generation);
}

/** What of the corpus a split that starts again need not read. */
interface WrittenObjects {
  /** The object's rows, when all are in written shards. */
  rowsOf(index: number): { start: number; end: number } | undefined;
  /** When the first row no written shard holds is inside this object: that row, and where its line starts. */
  resumeIn(index: number): { row: number; offset: number; line: number } | undefined;
}

const NOTHING_WRITTEN: WrittenObjects = { rowsOf: () => undefined, resumeIn: () => undefined };

/**
 * A split that starts again need not read an object whose rows are all in written shards: it
 * checks the object's version and steps over its rows. Nor the lines of the object holding the
 * first unwritten shard's start, up to it: it reads that object from there. The rows of each
 * object read to its end, and where each shard starts, were recorded (CorpusPins); the written
 * shards only grow, so what was written when the split started is enough.
 */
async function objectsInWrittenShards(corpora: Services['corpora'], id: string, shardRows: number): Promise<WrittenObjects> {
  const written = await corpora.ledger.writtenShards(id);
  if (written.size === 0) return NOTHING_WRITTEN;
  const ends = await corpora.pins.ends(id);
  let firstUnwritten = 0;
  while (written.has(firstUnwritten)) firstUnwritten += 1;
  const start = firstUnwritten > 0 ? await corpora.pins.shardStart(id, firstUnwritten) : undefined;
  return {
    rowsOf(index) {
      const end = ends[index];
      if (end === undefined) return undefined;
      const begin = index === 0 ? 0 : ends[index - 1]!;
      for (let shard = Math.floor(begin / shardRows); shard * shardRows < end; shard += 1) if (!written.has(shard)) return undefined;
      return { start: begin, end };
    },
    resumeIn(index) {
      if (start?.object !== index) return undefined;
      return { row: firstUnwritten * shardRows, offset: start.offset, line: start.line };
    },
  };
}
