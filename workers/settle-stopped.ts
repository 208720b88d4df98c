import { setTimeout as delay } from 'node:timers/promises';

import type { Logger } from '../src/logger.js';
import { ENDING_LEASE_MS } from '../jobs/output-lease.js';
import { QUEUES, stepOwner } from '../jobs/queues.js';
import type { Services } from './services.js';

/** How long `embedq cancel` (and the dashboard's cancel) waits for the job's steps to stop. */
export const CANCEL_WAIT_MS = 5_000;
const POLL_MS = 100;

export interface SettleOptions {
  /** Give up after this long (Default: CANCEL_WAIT_MS); the lease then runs out by itself. */
  timeoutMs?: number;
  /** A step not to wait for: the one failing the job, still active until its processor returns. */
  besides?: string;
  /** Stops waiting (a worker process draining); the lease then runs out by itself. */
  signal?: AbortSignal;
}

/**
 * The queues whose steps write or delete in a job's output: the split (`_SUCCESS`, the delta's
 * deletes), write-shard and finalize. Embed steps write only to Redis.
 */
const OUTPUT_QUEUES = [QUEUES.split, QUEUES.write] as const;

/**
 * After a job stopped (cancelled, failed): waits until no step of it that writes in its output is
 * active (workers abort its steps, shard uploads included, within a poll of their stop watch, so
 * this is quick unless a worker cannot see the stop), then gives back the output lease the job
 * kept meanwhile (OutputLeases.releaseEnding).
 * True if they stopped in time; if not, the lease runs out by itself a minute after the stop.
 *
 * Embed steps are not waited for: a job with thousands queued (a 100,000-line shard) kept some
 * active for as long as workers took them one after another only to end them as no-ops, and its
 * cancel waited 5 s and left the output leased for a minute, refusing the `--overwrite` run that
 * was to replace it.
 */
export async function settleStopped(services: Services, jobId: string, options: SettleOptions = {}): Promise<boolean> {
  const deadline = Date.now() + (options.timeoutMs ?? CANCEL_WAIT_MS);
  // Retried already (`cancel` then `retry` at once): the new generation's steps are not the
  // stopped run's, and waiting for them made `cancel` wait its full 5 s and say the output stays
  // leased, while the new run held it.
  const now = await services.corpora.jobs.stateAndGeneration(jobId);
  const newest = now === undefined ? Infinity : now.state === 'queued' || now.state === 'running' ? now.generation - 1 : now.generation;
  const ownStep = (id: string): boolean => {
    const owner = stepOwner(id);
    return owner?.corpusJobId === jobId && owner.generation <= newest && id !== options.besides;
  };
  for (;;) {
    let active = 0;
    // Ids only, all of them (getRanges reads to index 1 unless told: a third write active missed
    // this job's, and the output was given back under its upload).
    for (const name of OUTPUT_QUEUES) active += (await services.queues[name].getRanges(['active'], 0, -1)).filter(ownStep).length;
    if (active === 0) break;
    if (Date.now() > deadline) return false;
    // Unreferenced: a worker process waiting here in the background may still exit.
    await delay(POLL_MS, undefined, { ref: false, signal: options.signal });
  }
  const record = await services.corpora.get(jobId);
  if (record) await services.corpora.leases.releaseEnding(record.options.output, jobId);
  return true;
}

/**
 * The worker that failed a job gives its output back once the job's other steps have stopped, so
 * an operator who fixes the cause can run into the same output at once instead of a minute later.
 * In the background; a failure here only leaves the lease to run out. `logger` is the failing
 * step's, which binds `corpusJobId` (a second one broke strict JSON readers).
 */
export function releaseOutputOfFailed(services: Services, jobId: string, failingStep: string | undefined, signal: AbortSignal, logger: Logger): void {
  settleStopped(services, jobId, { timeoutMs: ENDING_LEASE_MS, besides: failingStep, signal })
    .then((settled) => logger.debug({ settled }, settled ? 'output of the failed job given back' : 'failed job still has active steps; its output lease runs out by itself'))
    .catch((error: unknown) => {
      if (!signal.aborted) logger.debug({ err: error }, 'could not give back the output of the failed job; its lease runs out by itself');
    });
}
