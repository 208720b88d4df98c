import type { Queue } from 'bullmq';

import { LEGACY_EMBED_QUEUE, QUEUE_NAMES, QUEUES, stepOwner, type QueueName } from '../jobs/queues.js';
import type { Logger } from '../src/logger.js';
import type { RedisClient } from '../src/redis/redis-client.js';

/** Services' queues (typed here: services.ts builds the sweeper). */
type StepQueues = Record<QueueName | typeof LEGACY_EMBED_QUEUE, Queue>;

/** The states of steps no worker has started: what `embed.backlog` (KEDA) counts. */
const QUEUED_STATES = ['wait', 'prioritized', 'delayed'] as const;
/** Removals sent at once (ioredis pipelines them on the connection). */
const REMOVE_CHUNK = 500;
/** The fleet sweeps a stopped generation once; a later sweep finds at most steps enqueued after it. */
const SWEPT_TTL_MS = 10 * 60_000;

/**
 * Removes the queued steps of a corpus job's generation that stopped (cancelled, failed, or
 * retried into a newer one), and of the generations before it, from every queue. Each was a no-op
 * already (its worker checks the generation first and ends it), but until a worker took it the
 * step counted in `embed.backlog`, what KEDA scales workers on: steps handed back in a 429 storm or
 * waiting out a retry's backoff stayed in the delayed set for their whole delay (up to a minute),
 * and every step while the workers' slots were busy with other jobs. (Free workers end queued
 * no-ops fast: 1,965 in 0.6 s with or without this.)
 * Returns how many were removed; a step a worker holds meanwhile is left to end as a no-op.
 */
export async function dropStoppedSteps(services: { queues: StepQueues }, corpusJobId: string, generation: number): Promise<number> {
  let removed = 0;
  for (const name of [...QUEUE_NAMES, LEGACY_EMBED_QUEUE] as const) {
    if (name === QUEUES.schedule) continue;
    const queue = services.queues[name];
    // Ids only (an embed step's data is its lines' text), all of them: getRanges stops at index 1 unless told.
    const stale = (await queue.getRanges([...QUEUED_STATES], 0, -1)).filter((id) => {
      const owner = stepOwner(id);
      return owner?.corpusJobId === corpusJobId && owner.generation <= generation;
    });
    for (let start = 0; start < stale.length; start += REMOVE_CHUNK) {
      const answers = await Promise.all(stale.slice(start, start + REMOVE_CHUNK).map((id) => queue.remove(id)));
      removed += answers.filter((answer) => answer === 1).length;
    }
  }
  return removed;
}

/**
 * A worker that meets a step of a stopped generation sweeps that generation's queued steps, in the
 * background: once a process (the first of its steps to notice), and once the fleet (a Redis key
 * `<prefix>:stopped-sweep:<job>:<generation>`, 10 min). A failure only leaves the steps to end one
 * by one as before.
 */
export class StoppedStepSweeper {
  private readonly seen = new Set<string>();

  constructor(private readonly services: { queues: StepQueues; redis: RedisClient; redisPrefix: string }) {}

  noteStopped(corpusJobId: string, generation: number, logger: Logger): void {
    const key = `${corpusJobId}:${generation}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    // A process running for days meets many stopped jobs: forget the oldest.
    if (this.seen.size > 1_000) this.seen.delete(this.seen.values().next().value!);
    void this.sweep(corpusJobId, generation).then(
      (removed) => {
        if (removed > 0) logger.info({ removed, generation }, 'queued steps of the stopped job removed');
      },
      (error: unknown) => logger.debug({ err: error }, 'could not remove the queued steps of the stopped job; they end one by one'),
    );
  }

  private async sweep(corpusJobId: string, generation: number): Promise<number> {
    const { redis, redisPrefix } = this.services;
    const claimed = await redis.set(`${redisPrefix}:stopped-sweep:${corpusJobId}:${generation}`, '1', 'PX', SWEPT_TTL_MS, 'NX');
    if (claimed !== 'OK') return 0;
    return dropStoppedSteps(this.services, corpusJobId, generation);
  }
}
