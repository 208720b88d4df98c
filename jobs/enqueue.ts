import { randomBytes } from 'node:crypto';

import type { Queue } from 'bullmq';

import type { JobOptions } from '../src/job-options.js';
import type { CorpusStore } from './corpus-store.js';
import type { EmbedBatchPayload, FinalizeJobPayload, SplitCorpusPayload, WriteShardPayload } from './payloads.js';
import { JOB_NAMES, embedJobId, finalizeJobId, splitJobId, writeShardJobId } from './queues.js';

/**
 * Adding jobs. Ids are deterministic, so adding the same step twice (a retried producer, two
 * workers seeing a shard complete) is a no-op while the first is still queued.
 */

/** Time-sortable corpus job id, e.g. `cj-mfx3k9z1-4f8a2c`. */
export function newCorpusJobId(now = Date.now()): string {
  return `cj-${now.toString(36)}-${randomBytes(3).toString('hex')}`;
}

/**
 * What a schedule run passes besides the options. `jobId`: the id chosen beforehand (a template's
 * `{runId}`). `overwrite` and `reuse` are INTENTS for issue 9 (`--overwrite`) and issue 11 phase 2
 * (`--reuse`): a template without a placeholder re-runs into the same output once the previous
 * run succeeded; `--incremental` reuses the schedule root. Today's submit does not act on them.
 */
export interface SubmitExtra {
  schedule?: string;
  jobId?: string;
  overwrite?: boolean;
  reuse?: string;
}

export async function submitCorpusJob(
  deps: { corpora: CorpusStore; splitQueue: Queue },
  options: JobOptions,
  extra: SubmitExtra = {},
): Promise<string> {
  const id = extra.jobId ?? newCorpusJobId();
  await deps.corpora.create(id, options, extra);
  await enqueueSplit(deps.splitQueue, id, 0);
  return id;
}

export async function enqueueSplit(queue: Queue, corpusJobId: string, generation: number): Promise<void> {
  const payload: SplitCorpusPayload = { v: 1, corpusJobId, generation };
  await queue.add(JOB_NAMES.splitCorpus, payload, { jobId: splitJobId(corpusJobId, generation) });
}

export async function enqueueEmbedBatches(queue: Queue, batches: readonly EmbedBatchPayload[]): Promise<void> {
  if (batches.length === 0) return;
  await queue.addBulk(
    batches.map((payload) => ({
      name: JOB_NAMES.embedBatch,
      data: payload,
      opts: { jobId: embedJobId(payload.corpusJobId, payload.generation, payload.shard, payload.batch) },
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

/** `embedq cancel`: stops the job; queued steps become no-ops and its buffers are freed (retry redoes them). */
export async function cancelCorpusJob(corpora: CorpusStore, corpusJobId: string): Promise<boolean> {
  const cancelled = await corpora.markCancelled(corpusJobId);
  if (cancelled) await corpora.dropShardBuffers(corpusJobId);
  return cancelled;
}

/**
 * `embedq retry`: resumes a failed or cancelled job under a new generation. Written shards are
 * kept; the shards that were still open are embedded again (see CorpusStore.restart).
 */
export async function retryCorpusJob(deps: { corpora: CorpusStore; splitQueue: Queue }, corpusJobId: string): Promise<boolean> {
  const generation = await deps.corpora.restart(corpusJobId);
  if (generation === undefined) return false;
  await enqueueSplit(deps.splitQueue, corpusJobId, generation);
  return true;
}

