import { LEGACY_EMBED_QUEUE, QUEUE_NAMES, QUEUES, stepOwner } from '../jobs/queues.js';
import { formatCount } from '../src/format-count.js';
import type { Services } from './services.js';

/**
 * How many of a corpus job's steps BullMQ holds as active while no worker holds their lock: the
 * worker that took them was killed, or is frozen past EMBEDQ_LOCK_DURATION_MS. A live worker takes
 * them back at its next stalled check (every EMBEDQ_STALLED_INTERVAL_MS); until then the job does
 * not move, and `status` said only "running" (a helper saw a SIGKILLed worker's job sit 24 s).
 */
export async function orphanedSteps(services: Pick<Services, 'queues' | 'redis'>, corpusJobId: string): Promise<number> {
  let orphaned = 0;
  for (const name of [...QUEUE_NAMES, LEGACY_EMBED_QUEUE] as const) {
    if (name === QUEUES.schedule) continue;
    const queue = services.queues[name];
    // Ids only: an embed step's data is its lines' text.
    const own = (await queue.getRanges(['active'])).filter((id) => stepOwner(id)?.corpusJobId === corpusJobId);
    for (const id of own) if ((await services.redis.exists(queue.toKey(`${id}:lock`))) === 0) orphaned += 1;
  }
  return orphaned;
}

/** What `status` says of `count` (above 0) such steps. */
export function describeOrphanedSteps(count: number): string {
  const steps = count === 1 ? '1 step of the job is' : `${formatCount(count)} steps of the job are`;
  return `${steps} held by a worker that stopped (killed, or frozen past EMBEDQ_LOCK_DURATION_MS): a live worker takes ${count === 1 ? 'it' : 'them'} back at its next stalled check (every EMBEDQ_STALLED_INTERVAL_MS)`;
}
