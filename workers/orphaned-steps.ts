import { LEGACY_EMBED_QUEUE, QUEUE_NAMES, QUEUES, stepOwner } from '../jobs/queues.js';
import { formatCount } from '../src/format-count.js';
import type { Services } from './services.js';

// The active list and each step's lock read in one script: read apart, a step that finished
// between the two reads (its lock and its place in the list go together) would count as held.
const UNLOCKED_ACTIVE_LUA = `
local unlocked = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id .. ':lock') == 0 then unlocked[#unlocked + 1] = id end
end
return unlocked
`;

/**
 * How many of each corpus job's steps BullMQ holds as active while no worker holds their lock: the
 * worker that took them was killed, or is frozen past EMBEDQ_LOCK_DURATION_MS. A live worker takes
 * them back at its next stalled check (every EMBEDQ_STALLED_INTERVAL_MS); until then the job does
 * not move, and `status` said only "running" (a helper saw a SIGKILLed worker's job sit 24 s).
 * Jobs with none are absent.
 */
export async function orphanedStepsByJob(services: Pick<Services, 'queues' | 'redis'>): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const name of [...QUEUE_NAMES, LEGACY_EMBED_QUEUE] as const) {
    if (name === QUEUES.schedule) continue;
    const queue = services.queues[name];
    const unlocked = (await services.redis.eval(UNLOCKED_ACTIVE_LUA, 1, queue.toKey('active'), queue.toKey(''))) as string[];
    for (const id of unlocked) {
      const owner = stepOwner(id)?.corpusJobId;
      if (owner !== undefined) counts.set(owner, (counts.get(owner) ?? 0) + 1);
    }
  }
  return counts;
}

/** `orphanedStepsByJob` for one corpus job. */
export async function orphanedSteps(services: Pick<Services, 'queues' | 'redis'>, corpusJobId: string): Promise<number> {
  return (await orphanedStepsByJob(services)).get(corpusJobId) ?? 0;
}

/** What `status` says of `count` (above 0) such steps. */
export function describeOrphanedSteps(count: number): string {
  const steps = count === 1 ? '1 step of the job is' : `${formatCount(count)} steps of the job are`;
  return `${steps} held by a worker that stopped (killed, or frozen past EMBEDQ_LOCK_DURATION_MS): a live worker takes ${count === 1 ? 'it' : 'them'} back at its next stalled check (every EMBEDQ_STALLED_INTERVAL_MS)`;
}
