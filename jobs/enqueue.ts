import { randomBytes } from 'node:crypto';

import type { Queue } from 'bullmq';

import { listCorpus } from '../src/corpus/list-corpus.js';
import type { JobOptions } from '../src/job-options.js';
import { LATEST_FILE } from '../src/output/layout.js';
import { StorageError } from '../src/errors.js';
import { openInput, openStore, parseLocation } from '../src/storage/locations.js';
import type { S3ClientSource } from '../src/storage/s3-store.js';
import type { CorpusJobRecord, CorpusStore } from './corpus-store.js';
import { JobLostError, OutputIsScheduleRootError, OutputLeasedError, OutputNotEmptyError } from './job-errors.js';
import { checkOutputWritable, clearPreviousRun, findPreviousRun, latestPointerAt, shardFilesOutOfPlace, type OutputLocation } from './output-files.js';
import type { EmbedBatchPayload, FinalizeJobPayload, SplitCorpusPayload, WriteShardPayload } from './payloads.js';
import { CORPUS_JOB_ID, JOB_NAMES, embedJobId, finalizeJobId, splitJobId, writeShardJobId } from './queues.js';
import type { ShardStats } from './shard-ledger.js';

/**
 * Adding jobs. Ids are deterministic, so adding the same step twice (a retried producer, two
 * workers seeing a shard complete) is a no-op while the first is still queued.
 */

/**
 * Time-sortable corpus job id, e.g. `cj-mfx3k9z1-4f8a2c`. `nowMs` is Redis's clock
 * (`CorpusStore.now`), so ids made on different machines sort as Redis saw them: a schedule's
 * `_latest.json` names the newest run by its id. Before, it was the submitting machine's clock, and
 * a `schedule run` from one an hour ahead made a run that every later run for an hour counted as newer.
 */
export function newCorpusJobId(nowMs: number): string {
  return `cj-${nowMs.toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** When a corpus job id was made (milliseconds), or undefined for an id not made by newCorpusJobId. */
export function corpusJobIdTime(id: string): number | undefined {
  const match = WHOLE_ID.exec(id);
  return match ? parseInt(match[1]!, 36) : undefined;
}

const WHOLE_ID = new RegExp(`^${CORPUS_JOB_ID}$`);

export interface SubmitDeps {
  corpora: CorpusStore;
  splitQueue: Queue;
  /** For s3:// outputs (created on first use). */
  s3: () => S3ClientSource;
}

export interface SubmitOptions {
  /** Name of the schedule that submits it. */
  schedule?: string;
  /** The id chosen beforehand (a schedule template's `{runId}`); default: a new one. */
  jobId?: string;
  /** Remove an earlier run's files from the output first, instead of refusing (Default: false). */
  overwrite?: boolean;
  /**
   * With `overwrite`: the output is a schedule's root, and its `_latest.json` names the run about
   * to be removed; the pointer goes first (Default: false).
   */
  withdrawLatest?: boolean;
}

/** A job's output as a store plus key prefix. */
export function openOutputLocation(output: string, s3?: () => S3ClientSource): OutputLocation {
  const location = parseLocation(output);
  return openStore(location, location.kind === 's3' ? s3?.() : undefined);
}

/**
 * The one way a corpus job is submitted (CLI, demo, scheduler). Invariant 7: it takes the output's
 * lease first (refused with OutputLeasedError when another job holds it), then, holding it, looks
 * for an earlier run's files: refused with OutputNotEmptyError, or removed with `overwrite`, and
 * checks that it can write there. Only then is the job recorded and its split queued; the lease is
 * given back if anything fails first.
 */
export async function submitCorpusJob(deps: SubmitDeps, options: JobOptions, extra: SubmitOptions = {}): Promise<string> {
  const { corpora } = deps;
  const id = extra.jobId ?? newCorpusJobId(await corpora.now());
  const holder = await corpora.leases.acquire(options.output, id);
  if (holder !== undefined) throw new OutputLeasedError(options.output, holder);
  try {
    const output = openOutputLocation(options.output, deps.s3);
    const pointer = await latestPointerAt(output, options.output);
    // Not for a schedule's own runs: one whose template lost its placeholder runs into its root,
    // where `_latest.json` still names a run below it.
    if (pointer && !pointer.namesThisOutput && extra.schedule === undefined) throw new OutputIsScheduleRootError(options.output, pointer.latest, pointer.schedule);
    const previous = await findPreviousRun(output);
    if (previous.length > 0 && !extra.overwrite) throw new OutputNotEmptyError(options.output, previous);
    if (extra.overwrite) {
      // Before the files it names: a pointer must never name an emptied output (a failed run left
      // it naming one). A run of the same output holds the lease, so no finalize writes it meanwhile.
      // An `embedq submit --overwrite` by hand into a schedule's output withdraws it too: it left the
      // pointer naming the run it removed, for good (only the schedule's own runs write one). A
      // pointer naming a run below (a root of runs) is not this output's, and stays.
      if (extra.withdrawLatest || pointer?.namesThisOutput) await output.store.delete(output.prefix + LATEST_FILE);
      await clearPreviousRun(output);
    }
    await checkOutputWritable(output, id, options.output);
    await corpora.jobs.create(id, options, { schedule: extra.schedule, leaseKey: corpora.leases.keyOf(options.output) });
    // After the record, so the lease never lasts without it (another submit would take it over).
    // Listing and clearing a large output can outlast the submit's lease (SUBMIT_LEASE_MS).
    if (!(await corpora.leases.confirm(options.output, id))) {
      throw new OutputLeasedError(options.output, (await corpora.leases.holder(options.output)) ?? { jobId: 'unknown', ending: false });
    }
    await enqueueSplit(deps.splitQueue, id, 0);
  } catch (error) {
    // Nothing of a failed submit stays: no record queued forever, no lease refusing the next run.
    // Best effort: the submit's own error is the one to report.
    await corpora.jobs.discard(id).catch(() => undefined);
    await corpora.leases.release(options.output, id).catch(() => undefined);
    throw error;
  }
  // Records grow with every run (a schedule every minute: ~2.5 MB a day); old ones go here.
  // The job is queued by now: a failure here must not make its submit look failed; the next submit tries again.
  await corpora.pruneEnded().catch(() => undefined);
  return id;
}

export async function enqueueSplit(queue: Queue, corpusJobId: string, generation: number): Promise<void> {
  const payload: SplitCorpusPayload = { v: 1, corpusJobId, generation };
  await queue.add(JOB_NAMES.splitCorpus, payload, { jobId: splitJobId(corpusJobId, generation) });
}

/**
 * A job's batches past this many share their model's embed queue in order of arrival; before it,
 * they go ahead of the batches of jobs further along (see `embedPriority`). 1,000 requests: 10,000
 * lines.
 */
export const FAST_LANE_BATCHES = 1_000;

/**
 * The BullMQ priority of a job's batch with `batchesBefore` of its batches queued before it (lower
 * goes first, equal ones in order of arrival). A job's first FAST_LANE_BATCHES batches go before the
 * batches of jobs that have sent more, the job that has sent fewer first; past them, all jobs share
 * the queue in order, as before. In plain order a small job (a schedule's few changed lines)
 * waited behind every batch a big job had queued: up to two shards, 2,000 requests at the
 * defaults, minutes on a small quota. A big job waits at most for another's first 10,000 lines.
 */
export function embedPriority(batchesBefore: number): number {
  return 1 + Math.min(batchesBefore, FAST_LANE_BATCHES);
}

/** Queues a job's batches; `batchesBefore`: how many of its batches were queued before these (see embedPriority). */
export async function enqueueEmbedBatches(queue: Queue, batches: readonly EmbedBatchPayload[], batchesBefore: number): Promise<void> {
  if (batches.length === 0) return;
  await queue.addBulk(
    batches.map((payload, index) => ({
      name: JOB_NAMES.embedBatch,
      data: payload,
      opts: { jobId: embedJobId(payload.corpusJobId, payload.generation, payload.shard, payload.batch), priority: embedPriority(batchesBefore + index) },
    })),
  );
}

export async function enqueueWriteShard(queue: Queue, corpusJobId: string, generation: number, shard: number): Promise<void> {
  const payload: WriteShardPayload = { v: 1, corpusJobId, generation, shard };
  await queue.add(JOB_NAMES.writeShard, payload, { jobId: writeShardJobId(corpusJobId, generation, shard) });
}

export async function enqueueFinalize(queue: Queue, corpusJobId: string, generation: number): Promise<void> {
  const payload: FinalizeJobPayload = { v: 1, corpusJobId, generation };
  await queue.add(JOB_NAMES.finalizeJob, payload, { jobId: finalizeJobId(corpusJobId, generation) });
}

export type CancelResult = { cancelled: true } | { cancelled: false; message: string };

/**
 * `embedq cancel`: stops the job and frees its buffers in one step; queued steps become no-ops and
 * workers abort the job's requests in flight. Refused once finalize is writing the output: a
 * cancel then would give up the output's lease under a `_SUCCESS` being written. Throws
 * JobLostError when Redis has no such job.
 */
export async function cancelCorpusJob(corpora: CorpusStore, corpusJobId: string): Promise<CancelResult> {
  const result = await corpora.jobs.markCancelled(corpusJobId);
  if (result === 'cancelled') return { cancelled: true };
  if (result === 'finishing') return { cancelled: false, message: 'it is finishing: every shard is written and its manifest is being written' };
  const state = await corpora.state(corpusJobId);
  if (state === undefined) throw new JobLostError(corpusJobId);
  return { cancelled: false, message: `it is ${state}, not queued or running` };
}

/** `rewritten`: written shards whose files had gone from the output, which the retry writes again. */
export type RetryResult = { retried: true; generation: number; rewritten: string[] } | { retried: false; message: string };

/**
 * `embedq retry`: resumes a failed or cancelled job under a new generation (see JobRecords.restart).
 * Written shards are kept, unless their files are gone from the output; the shards that were still
 * open, and those, are embedded again. Throws JobLostError when Redis has no such job.
 */
export async function retryCorpusJob(deps: SubmitDeps, corpusJobId: string): Promise<RetryResult> {
  const record = await deps.corpora.get(corpusJobId);
  const stopped = record?.state === 'failed' || record?.state === 'cancelled' ? record : undefined;
  if (stopped) {
    const { input, output } = stopped.options;
    const listing = listCorpus(input, { s3Client: input.startsWith('s3://') ? deps.s3() : undefined, output });
    const changed = await deps.corpora.pins.changedSince(corpusJobId, input, listing);
    if (changed) return { retried: false, message: `its input changed since it was read: ${changed.message}` };
    const gone = await failedOnObjectStillGone(stopped, deps.s3);
    if (gone) {
      return {
        retried: false,
        message: `it failed because ${gone} was removed after the job listed it, and it is still gone: a retry would read the corpus without it and leave its lines out, with no record. Put it back, or submit the job again with --overwrite`,
      };
    }
  }
  const gone = stopped ? await writtenShardsGone(deps, stopped) : [];
  const result = await deps.corpora.jobs.restart(corpusJobId, gone.map((shard) => shard.shard));
  if ('generation' in result) {
    await enqueueSplit(deps.splitQueue, corpusJobId, result.generation);
    return { retried: true, generation: result.generation, rewritten: gone.map((shard) => shard.file) };
  }
  if (result.reason === 'missing') throw new JobLostError(corpusJobId);
  if (result.reason === 'leased') return { retried: false, message: `its output is now being written by job ${result.holder}` };
  if (result.reason === 'taken') {
    return { retried: false, message: `job ${result.taker} took its output since it stopped, so its shards there may be gone or replaced; submit it again (with --overwrite)` };
  }
  return { retried: false, message: `it is ${result.state}, not failed or cancelled` };
}

/** How a corpus object that vanished between the listing and its read is named in the failure (S3, local). */
const GONE_OBJECT = /\b(?:read|open|stat|list) (s3:\/\/\S+|\/\S+): no such (?:object|file)\b/;

/**
 * The corpus object a stopped job failed on because it was removed after the listing, while it is
 * still gone. Such an object was never pinned (only objects opened are), so a retry listed the
 * corpus without it and completed with its lines missing and nothing saying so (a helper: 100
 * lines of a 20-object prefix). Undefined when the job failed otherwise, or the object is back.
 */
async function failedOnObjectStillGone(record: CorpusJobRecord, s3: () => S3ClientSource): Promise<string | undefined> {
  if (record.errorCode !== 'STORAGE_ERROR' || record.error === null) return undefined;
  const location = GONE_OBJECT.exec(record.error)?.[1];
  if (location === undefined || !location.startsWith(record.options.input)) return undefined;
  try {
    const target = await openInput(parseLocation(location), location.startsWith('s3://') ? s3() : undefined);
    if (target.mode === 'object' && (await target.store.stat(target.key)) !== undefined) return undefined;
  } catch (error) {
    // A local path that is neither file nor folder: gone.
    if (!(error instanceof StorageError)) throw error;
  }
  return location;
}

/**
 * The stopped job's written shards whose files are missing from its output, or of another size
 * (removed or replaced while it stood stopped: a cleanup between cancel and retry). Before, the
 * retry embedded the rest, then failed at finalize naming them ("removed or replaced while the job
 * ran"), and only a second retry wrote them again.
 */
async function writtenShardsGone(deps: SubmitDeps, record: CorpusJobRecord): Promise<ShardStats[]> {
  const written = await deps.corpora.ledger.stats(record.id);
  return (await shardFilesOutOfPlace(openOutputLocation(record.options.output, deps.s3), written)).map(({ shard }) => shard);
}
