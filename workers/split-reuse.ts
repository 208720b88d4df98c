import type { CorpusJobRecord } from '../jobs/job-record.js';
import type { ReuseCounts } from '../jobs/shard-buffer.js';
import { InputEmptyError, ReuseUnavailableError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import { sleep } from '../src/sleep.js';
import type { PreviousErrorIds } from '../src/reuse/previous-errors.js';
import type { PreviousIndex } from '../src/reuse/previous-index.js';
import { resolvePreviousOutput, type PreviousOutput } from '../src/reuse/previous-output.js';
import { encodeReuseList, type ReusedLine } from '../src/reuse/reuse-list.js';
import { openOutput } from './output.js';
import type { Services } from './services.js';

/**
 * The split step's side of `--reuse`: the index of the previous output (one per job, built once
 * when the split starts), matching each line against it, and the per-shard list of lines that take
 * a previous row's vectors. With `--id-field` it also classifies every id (new, changed,
 * unchanged) and, at the end, writes `_delta/deletes.jsonl`.
 */

/**
 * A worker process holds previous-output indexes of at most this many bytes at once (about 47
 * bytes a row, plus sorting scratch: 64 is the estimate). One index of any size is always let in;
 * a further incremental split waits for room, so four splits at once (the split queue's
 * concurrency) cannot hold four large indexes. 64 MiB is a 1,000,000-row previous output.
 */
const INDEX_BUDGET_BYTES = 64 * 1024 * 1024;
const INDEX_BYTES_PER_ROW = 64;
const ROOM_POLL_MS = 500;
let indexBytesHeld = 0;
let indexesHeld = 0;

export class SplitReuse {
  private lines: ReusedLine[] = [];
  private counts: ReuseCounts = { reused: 0, new: 0, changed: 0, unchanged: 0 };

  private constructor(
    private readonly index: PreviousIndex,
    /** With `--id-field` (ids are classified, the delta is written): the ids of the previous output's refused lines. */
    private readonly errorIds: PreviousErrorIds | undefined,
    readonly release: () => void,
  ) {}

  /** With `--id-field`: ids are classified, the delta is written. */
  get tracksIds(): boolean {
    return this.errorIds !== undefined;
  }

  /**
   * Opens the job's previous output and builds its index; undefined when the job has no `--reuse`,
   * or when the previous output cannot be used: then the reason is logged and stored on the job
   * (`reuse_error` in the manifest) and the run embeds everything. Once stored it stays: every
   * later split of the job (a retry) embeds everything too, so the delta never mixes two bases. A
   * job that failed with REUSE_UNAVAILABLE gets that failure stored as it when retried (RESTART in
   * jobs/job-record-scripts.ts).
   * Thrown: a storage outage (the split retries), and the previous output failing a re-attempt of
   * the split that first used it (the job fails; see below).
   */
  static async open(services: Services, record: CorpusJobRecord, generation: number, logger: Logger): Promise<SplitReuse | undefined> {
    const { options } = record;
    if (options.reuse === undefined) return undefined;
    if (record.reuseError !== null) {
      logger.warn({ reuseError: record.reuseError }, 'reuse unavailable (recorded earlier); embedding every line');
      return undefined;
    }
    let release: (() => void) | undefined;
    try {
      const previous = await resolve(services, record);
      const rows = previous.manifest.shards.reduce((sum, shard) => sum + shard.rows, 0);
      // With `--id-field` the ids of its error records are held too (fewer bytes each than a row's).
      const errors = options.idField !== undefined ? (previous.manifest.counts?.failed ?? 0) : 0;
      release = await acquireIndexRoom((rows + errors) * INDEX_BYTES_PER_ROW, async () => {
        const now = await services.corpora.jobs.stateAndGeneration(record.id);
        return now?.state === 'running' && now.generation === generation;
      });
      const started = performance.now();
      // The index and delta modules bring hyparquet, Arrow and parquet-wasm: loaded by `--reuse` runs only.
      const { PreviousIndex } = await import('../src/reuse/previous-index.js');
      const index = await PreviousIndex.build(previous);
      let errorIds: PreviousErrorIds | undefined;
      if (options.idField !== undefined) {
        const { PreviousErrorIds } = await import('../src/reuse/previous-errors.js');
        errorIds = await PreviousErrorIds.build(previous);
      }
      if (!record.reusedFrom) {
        await services.corpora.jobs.setReuse(record.id, generation, { reusedFrom: { location: previous.location, jobId: previous.manifest.job_id, generation } });
      }
      logger.info({ reusedFrom: previous.location, previousJobId: previous.manifest.job_id, rows, durationMs: Math.round(performance.now() - started) }, 'previous output indexed');
      return new SplitReuse(index, errorIds, release);
    } catch (error) {
      release?.();
      if (!(error instanceof ReuseUnavailableError)) throw error;
      await services.corpora.jobs.setReuse(record.id, generation, { reuseError: error.message });
      if (record.reusedFrom?.generation === generation) {
        // An earlier attempt of this split closed shards with reuse lists; splitting them again
        // without the index would batch them differently under the same batch numbers. Stop the
        // job instead: `retry` drops the open buffers and, with the error recorded, embeds the rest.
        throw new ReuseUnavailableError(`${error.message}; this job had already matched lines against it, so it stops here (embedq retry embeds the rest)`, { cause: error });
      }
      // Classified, so no stack: it is what a schedule's first incremental run always logs.
      logger.warn({ code: error.code, reason: error.message, reuse: options.reuse }, 'reuse unavailable; embedding every line');
      return undefined;
    }
  }

  /**
   * For the delta: what became of this id (marks it seen). Undefined without `--id-field` or id.
   * An id the previous run refused has no row there but was in its corpus: `changed`, not `new`.
   */
  classify(id: string | null, key: Buffer): 'new' | 'changed' | 'unchanged' | undefined {
    if (!this.errorIds || id === null) return undefined;
    const kind = this.index.classifyId(id, key);
    const refusedBefore = this.errorIds.see(id);
    return kind === 'new' && refusedBefore ? 'changed' : kind;
  }

  /**
   * Counts the line for its shard and, when a previous row has its content key, puts it on the
   * shard's reuse list (true) instead of a batch (false).
   */
  take(line: Omit<ReusedLine, 'shard' | 'rowInShard'>, kind: 'new' | 'changed' | 'unchanged' | undefined): boolean {
    if (kind !== undefined) this.counts[kind] += 1;
    const position = this.index.match(line.source, line.line, line.hash);
    if (position === -1) return false;
    const { shard, rowInShard } = this.index.locate(position);
    this.lines.push({ ...line, shard, rowInShard });
    this.counts.reused += 1;
    return true;
  }

  /** The closing shard's encoded reuse list (undefined when empty) and counts; starts the next shard. */
  closeShard(): { reuseList: Buffer | undefined; reuse: ReuseCounts } {
    const result = { reuseList: this.lines.length > 0 ? encodeReuseList(this.lines) : undefined, reuse: this.counts };
    this.lines = [];
    this.counts = { reused: 0, new: 0, changed: 0, unchanged: 0 };
    return result;
  }

  /**
   * After the last line: `_delta/deletes.jsonl` (ids of the previous output's rows and refused
   * lines never seen). Returns how many. Throws InputEmptyError, writing nothing, when the input
   * had no line (`lines`) and every id of the previous output would be deleted.
   */
  async writeDeletes(services: Services, options: { input: string; output: string }, lines: number): Promise<number | undefined> {
    if (!this.errorIds) return undefined;
    if (lines === 0 && (this.index.hasIds || this.errorIds.hasIds)) {
      throw new InputEmptyError(
        `${options.input} has no line, and the previous output ${this.index.previous.location} has ids: the delta would delete every one of them. An empty corpus is more often an export that failed than one emptied on purpose; if it was emptied on purpose, submit without --reuse (a run without a delta) and delete the ids from your store yourself`,
      );
    }
    const { writeDeletes } = await import('../src/reuse/delta-writer.js');
    return writeDeletes(openOutput(options.output, services), this.index, this.errorIds);
  }
}

/** The previous output: the one this job started from if a split recorded it, else what `--reuse` leads to now. */
async function resolve(services: Services, record: CorpusJobRecord): Promise<PreviousOutput> {
  const open = (location: string) => openOutput(location, services);
  const { options, reusedFrom } = record;
  const previous = await resolvePreviousOutput(reusedFrom?.location ?? options.reuse!, open, { schedule: record.schedule, output: options.output });
  if (reusedFrom && previous.manifest.job_id !== reusedFrom.jobId) {
    throw new ReuseUnavailableError(`${previous.location} now holds the output of job ${previous.manifest.job_id}, not of ${reusedFrom.jobId} that this job started from`);
  }
  if (previous.location.replace(/\/+$/, '') === options.output.replace(/\/+$/, '')) {
    throw new ReuseUnavailableError(`${options.reuse!} leads to this job's own output ${options.output}`);
  }
  return previous;
}

/**
 * Waits for room in the process's index budget (checked every ROOM_POLL_MS); throws
 * ReuseUnavailableError when the job stopped or moved on meanwhile. Returns the release.
 */
export async function acquireIndexRoom(bytes: number, stillCurrent: () => Promise<boolean>): Promise<() => void> {
  while (indexesHeld > 0 && indexBytesHeld + bytes > INDEX_BUDGET_BYTES) {
    if (!(await stillCurrent())) throw new ReuseUnavailableError('the job stopped while its split waited for room to index the previous output');
    await sleep(ROOM_POLL_MS);
  }
  indexBytesHeld += bytes;
  indexesHeld += 1;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    indexBytesHeld -= bytes;
    indexesHeld -= 1;
  };
}
