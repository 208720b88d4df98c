import { createInterface } from 'node:readline';

import type { CorpusJobRecord, ErrorRecord } from '../../jobs/corpus-store.js';
import type { JobRequestStats } from '../../src/metrics/read-metrics.js';
import { MODELS } from '../../src/models.js';
import { ERRORS_FILE } from '../../src/output/layout.js';
import { processedLines } from '../commands/progress.js';
import { openOutput } from '../output.js';
import type { Services } from '../services.js';
import type { ThroughputTracker } from './throughput.js';

/** One corpus job as the page and `/api/jobs` show it. Options carry no secrets (the API key is process config). */
export interface JobView {
  id: string;
  state: CorpusJobRecord['state'];
  /** Running, with every shard written: finalize is writing the output; no cancel. */
  finishing: boolean;
  input: string;
  output: string;
  model: string;
  dimension: number;
  schedule: string | null;
  /** 0..1, or null until splitting has counted the lines. */
  progress: number | null;
  linesDone: number;
  linesTotal: number | null;
  linesRead: number;
  embedded: number;
  failed: number;
  blank: number;
  shardsWritten: number;
  totalShards: number | null;
  throughputNow: number;
  throughputAverage: number;
  etaSeconds: number | null;
  tokens: number;
  estimatedCostUsd: number;
  requests: number;
  throttled: number;
  /** 429s / requests, 0..1. */
  throttledShare: number;
  error: string | null;
  errorCode: string | null;
  /** The last failed attempt of a step that will be retried, and when (ms). */
  lastRetry: string | null;
  lastRetryAt: number | null;
  /**
   * Steps of a running job held by a worker that stopped (their lock ran out; a live worker takes
   * them back at its next stalled check): the job does not move meanwhile. 0 otherwise.
   */
  stalledSteps: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** `[time ms, lines/s]`. */
  history: Array<[number, number]>;
  firstErrors: ErrorRecord[];
}

export function toJobView(
  record: CorpusJobRecord,
  requests: JobRequestStats,
  throughput: ThroughputTracker,
  firstErrors: ErrorRecord[],
  now = Date.now(),
  stalledSteps = 0,
): JobView {
  const done = processedLines(record);
  const total = record.totalLines;
  const elapsed = secondsRun(record, now);
  const running = record.state === 'running';
  const throughputNow = running ? throughput.now(record.id, now) : 0;
  // Over every line the job processed in the time it ran, the ones a retry embeds again included.
  const throughputAverage = elapsed > 0 ? (done + record.linesRedone) / elapsed : 0;
  return {
    id: record.id,
    state: record.state,
    finishing: record.finishing,
    input: record.options.input,
    output: record.options.output,
    model: record.options.model,
    dimension: record.options.dimension,
    schedule: record.schedule,
    progress: total === null ? null : total === 0 ? 1 : Math.min(1, done / total),
    linesDone: done,
    linesTotal: total,
    linesRead: record.linesRead,
    embedded: record.rowsEmbedded,
    failed: record.rowsFailed,
    blank: record.rowsBlank,
    shardsWritten: record.shardsWritten,
    totalShards: record.totalShards,
    throughputNow,
    throughputAverage,
    // From the recent rate only: a job that stopped moving (an outage, another job's batches ahead
    // of it) has no ETA, where the average made one up that grew with every second.
    etaSeconds: running && total !== null && throughputNow > 0 ? Math.max(0, (total - done) / throughputNow) : null,
    tokens: record.tokens,
    estimatedCostUsd: (record.tokens / 1_000_000) * MODELS[record.options.model].usdPerMillionTokens,
    requests: requests.requests,
    throttled: requests.throttled,
    throttledShare: requests.requests > 0 ? requests.throttled / requests.requests : 0,
    error: record.error,
    errorCode: record.errorCode,
    lastRetry: record.lastRetry,
    lastRetryAt: record.lastRetryAt,
    stalledSteps: running ? stalledSteps : 0,
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
    history: throughput.history(record.id),
    firstErrors,
  };
}

/**
 * How long the job has run: its ended generations' time and the current one's, not the time it
 * stood failed or cancelled before a retry (the average counted it: a job retried after a night
 * showed a few lines a second).
 */
function secondsRun(record: CorpusJobRecord, now: number): number {
  // A generation before resumedAt existed (a record from an older embedq) ran from startedAt.
  const from = record.resumedAt ?? (record.generation === 0 || record.activeMs === 0 ? record.startedAt : null);
  const current = from === null ? 0 : Math.max(0, (record.finishedAt ?? now) - from);
  return (record.activeMs + current) / 1000;
}

/**
 * The first error records of a job: from `_errors.jsonl` once finalized, else from the written
 * shards' scratch files. Read from the output store (the records are not kept in Redis), only when
 * the job's written-shard count or state changed.
 */
export class FirstErrors {
  private readonly cache = new Map<string, { key: string; errors: ErrorRecord[] }>();

  constructor(
    private readonly services: Pick<Services, 's3' | 'corpora' | 'logger'>,
    private readonly limit = 5,
  ) {}

  async of(record: CorpusJobRecord): Promise<ErrorRecord[]> {
    if (record.rowsFailed === 0) return [];
    const key = `${record.state}:${record.shardsWritten}`;
    const cached = this.cache.get(record.id);
    if (cached?.key === key) return cached.errors;
    const errors = await this.read(record).catch((error: unknown) => {
      this.services.logger.debug({ err: error, corpusJobId: record.id }, 'error records unreadable');
      return [];
    });
    this.cache.set(record.id, { key, errors });
    return errors;
  }

  /** Read now, without the cache. */
  async read(record: CorpusJobRecord): Promise<ErrorRecord[]> {
    if (record.rowsFailed === 0) return [];
    const { store, prefix } = openOutput(record.options.output, this.services);
    const files =
      record.state === 'completed'
        ? [ERRORS_FILE]
        : (await this.services.corpora.ledger.stats(record.id)).flatMap((shard) => (shard.errorsKey ? [shard.errorsKey] : []));
    const errors: ErrorRecord[] = [];
    for (const file of files) {
      if (errors.length >= this.limit) break;
      const stream = await store.read(prefix + file);
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      for await (const line of lines) {
        if (line.trim() !== '') errors.push(JSON.parse(line) as ErrorRecord);
        if (errors.length >= this.limit) break;
      }
      lines.close();
      stream.destroy();
    }
    return errors;
  }

  keepOnly(ids: ReadonlySet<string>): void {
    for (const id of this.cache.keys()) if (!ids.has(id)) this.cache.delete(id);
  }
}
