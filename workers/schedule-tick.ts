import { UnrecoverableError, type Job } from 'bullmq';
import { z } from 'zod';

import { JOB_NAMES, QUEUES } from '../jobs/queues.js';
import { runSchedule } from '../jobs/schedule-run.js';
import { ScheduleStore, type ScheduleTickPayload } from '../jobs/schedule-store.js';
import type { Services } from './services.js';

/**
 * The `schedule-tick` processor. BullMQ's Job Scheduler adds one job per tick, so however many
 * workers run this, a tick is handled once. A tick that finds the previous run still going is
 * skipped (counted), or with `--on-overlap queue` comes back every QUEUE_POLL_MS until the run
 * has ended (for at most QUEUE_WAIT_LIMIT_MS, then it counts as skipped: every wait ends).
 */
const TickPayload = z.object({ v: z.literal(1), schedule: z.string().min(1), tickMillis: z.number().int().nonnegative().optional() });

export const QUEUE_POLL_MS = 1_000;
export const QUEUE_WAIT_LIMIT_MS = 24 * 60 * 60 * 1_000;

export function scheduleStore(services: Pick<Services, 'redis' | 'settings'>): ScheduleStore {
  return new ScheduleStore(services.redis, services.settings.redisPrefix);
}

export function scheduleTickProcessor(services: Services): (job: Job) => Promise<void> {
  const schedules = scheduleStore(services);
  return async (job) => {
    const parsed = TickPayload.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`INVALID_PAYLOAD: ${parsed.error.message}`);
    const payload = parsed.data;
    // A scheduler's job carries its tick as `prevMillis`; a re-queued tick carries it in the payload.
    const tickMillis = payload.tickMillis ?? (job.opts as { prevMillis?: number }).prevMillis ?? job.timestamp;
    const logger = services.logger.child({ queue: job.queueName, job: job.name, jobId: job.id, schedule: payload.schedule, tick: new Date(tickMillis).toISOString() });
    const outcome = await runSchedule({ schedules, corpora: services.corpora, splitQueue: services.queues[QUEUES.split] }, payload.schedule, tickMillis);
    switch (outcome.kind) {
      case 'submitted':
        logger.info({ corpusJobId: outcome.jobId, output: outcome.output }, 'schedule run submitted');
        return;
      case 'failed':
        logger.error({ reason: outcome.error }, 'schedule run not started');
        return;
      case 'missing':
        logger.warn('schedule no longer exists; tick ignored');
        return;
      case 'busy': {
        const schedule = await schedules.get(payload.schedule);
        const waitedMs = Date.now() - tickMillis;
        if (schedule?.onOverlap === 'queue' && waitedMs < QUEUE_WAIT_LIMIT_MS) {
          if (payload.tickMillis === undefined) {
            await schedules.recordQueued(payload.schedule, tickMillis, outcome.activeJobId);
            logger.info({ activeJobId: outcome.activeJobId }, 'previous run still active; tick queued');
          }
          const retry: ScheduleTickPayload = { v: 1, schedule: payload.schedule, tickMillis };
          await services.queues[QUEUES.schedule].add(JOB_NAMES.scheduleTick, retry, {
            delay: QUEUE_POLL_MS,
            jobId: `queued-${payload.schedule}-${tickMillis}-${Date.now()}`,
          });
          return;
        }
        await schedules.recordSkip(payload.schedule, tickMillis, outcome.activeJobId);
        logger.warn({ activeJobId: outcome.activeJobId, waitedMs }, 'previous run still active; tick skipped');
      }
    }
  };
}
