import { sleep } from '../src/sleep.js';
import type { Services } from './services.js';

/** How long `embedq cancel` (and the dashboard's cancel) waits for the job's steps to stop. */
export const CANCEL_WAIT_MS = 5_000;

/**
 * After a cancel: waits until no BullMQ step of the job is active (workers abort its requests
 * within a poll of their stop watch, so this is quick), then gives back the output lease the job
 * kept while they ran (OutputLeases.releaseEnding). True if they stopped in time; if not, the
 * lease runs out by itself a minute after the cancel.
 */
export async function settleCancelled(services: Services, jobId: string, timeoutMs = CANCEL_WAIT_MS): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let active = 0;
    for (const queue of Object.values(services.queues)) {
      const jobs = await queue.getActive();
      active += jobs.filter((job) => job.id?.startsWith(`${jobId}-`)).length;
    }
    if (active === 0) break;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  const record = await services.corpora.get(jobId);
  if (record) await services.corpora.leases.releaseEnding(record.options.output, jobId);
  return true;
}
