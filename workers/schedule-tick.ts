import { UnrecoverableError, type Job } from 'bullmq';
import * as z from 'zod';

import { JOB_NAMES, QUEUES } from '../jobs/queues.js';
import { isBullmqQueueKey } from '../jobs/schedule-name.js';
import { nextScheduleTick } from '../jobs/schedule-next-tick.js';
import { runSchedule, type ScheduleRunDeps } from '../jobs/schedule-run.js';
import { ScheduleStore, type ScheduleTickPayload } from '../jobs/schedule-store.js';
import type { Logger } from '../src/logger.js';
import type { Services } from './services.js';
import { settleStopped } from './settle-stopped.js';

/**
 * The `schedule-tick` processor. BullMQ's Job Scheduler adds one job per tick, so however many
 * workers run this, a tick is handled once. A tick that finds the previous run still going is
 * skipped (counted), or with `--on-overlap queue` comes back every QUEUE_POLL_MS until the run
 * has ended (at most one tick waits; it gives up after QUEUE_WAIT_LIMIT_MS: every wait ends).
 */
const TickPayload = z.object({
  v: z.literal(1),
  schedule: z.string().min(1),
  tickMillis: z.number().int().nonnegative().optional(),
  scheduleCreatedAt: z.number().int().nonnegative().optional(),
});

export const QUEUE_POLL_MS = 1_000;
export const QUEUE_WAIT_LIMIT_MS = 24 * 60 * 60 * 1_000;
/** Missed ticks counted at most (an every-second schedule down for a day would be 86,400 parses). */
const MISSED_COUNT_LIMIT = 10_000;
/** A tick this close to now is the next one BullMQ plans, not a missed one. */
const MISSED_SLACK_MS = 1_000;

export function scheduleStore(services: Pick<Services, 'redis' | 'settings'>): ScheduleStore {
  return new ScheduleStore(services.redis, services.settings.redisPrefix);
}

/**
 * What a schedule's run needs, for a tick and `schedule run` alike. A run stopped moments ago keeps
 * its output until none of its steps is active: found so, it is given back at once, so a waiting
 * tick goes at its next poll, not a minute later.
 */
export function scheduleRunDeps(services: Services, schedules = scheduleStore(services)): ScheduleRunDeps {
  return {
    schedules,
    corpora: services.corpora,
    splitQueue: services.queues[QUEUES.split],
    s3: services.s3,
    releaseEnded: (jobId) => settleStopped(services, jobId, { timeoutMs: 0 }),
  };
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
    if (isBullmqQueueKey(payload.schedule)) {
      // A Job Scheduler an older version installed under a name that is no schedule's.
      logger.warn('no schedule may have this name; tick ignored (`embedq schedule remove` removes its scheduler)');
      return;
    }
    const requeued = payload.tickMillis !== undefined;
    if (requeued && !(await sameScheduleAsQueued(schedules, payload.schedule, tickMillis, payload.scheduleCreatedAt))) {
      // The schedule it waited on was removed (and maybe added anew under the same name). Run, it
      // claimed the slot of whatever schedule now has the name, beside the removed one's run that
      // may still be going.
      logger.warn('the schedule this tick waited on was removed; queued tick dropped');
      return;
    }
    if (!requeued) await noteMissedTicks(schedules, payload.schedule, tickMillis, logger);
    if (!requeued && (await waitingTick(schedules, payload.schedule)) !== null) {
      // A queued tick goes first; a fresh one must not overtake it when the run ends.
      await schedules.recordSkip(payload.schedule, tickMillis, 'a tick already queued');
      logger.warn('tick skipped: a tick already queued');
      return;
    }
    const outcome = await runSchedule(scheduleRunDeps(services, schedules), payload.schedule, tickMillis, 'skip');
    if (outcome.kind !== 'busy') {
      if (requeued) await schedules.unqueueTick(payload.schedule, tickMillis);
      if (outcome.kind === 'submitted') logger.info({ corpusJobId: outcome.jobId, output: outcome.output }, 'schedule run submitted');
      if (outcome.kind === 'failed') logger.error({ reason: outcome.error }, 'schedule run not started');
      if (outcome.kind === 'missing') logger.warn('schedule no longer exists; tick ignored');
      if (outcome.kind === 'paused') {
        await schedules.recordPausedTick(payload.schedule, tickMillis);
        logger.info({ pausedAt: new Date(outcome.pausedAt).toISOString() }, 'schedule paused; tick starts no run');
      }
      return;
    }
    const schedule = await schedules.get(payload.schedule);
    const waitedMs = Date.now() - tickMillis;
    let reason = outcome.ending ? `run ${outcome.activeJobId} stopped moments ago and a step of it may still be writing the output` : `previous run ${outcome.activeJobId} still active`;
    if (schedule?.onOverlap === 'queue') {
      const queued =
        waitedMs >= QUEUE_WAIT_LIMIT_MS
          ? 'gave-up'
          : requeued
            ? await stillWaiting(schedules, payload.schedule, tickMillis)
            : await schedules.queueTick(payload.schedule, tickMillis, outcome.activeJobId);
      if (queued === 'gave-up') {
        reason = `waited ${Math.round(waitedMs / 60_000)} min for ${outcome.activeJobId}; gave up`;
        await schedules.unqueueTick(payload.schedule, tickMillis);
      } else if (queued === 'queued') {
        if (!requeued) logger.info({ activeJobId: outcome.activeJobId }, 'previous run still active; tick queued');
        const retry: ScheduleTickPayload = { v: 1, schedule: payload.schedule, tickMillis, scheduleCreatedAt: payload.scheduleCreatedAt ?? schedule.createdAt };
        await services.queues[QUEUES.schedule].add(JOB_NAMES.scheduleTick, retry, {
          delay: QUEUE_POLL_MS,
          jobId: `queued-${payload.schedule}-${tickMillis}-${Date.now()}`,
        });
        return;
      } else if (queued === 'taken') {
        reason = `previous run ${outcome.activeJobId} still active and a tick already queued`;
      }
      // 'not-queueing': the schedule changed to skip since the tick read it, or dropped this waiting
      // tick meanwhile; skipped as under skip.
    } else if (requeued) {
      // The schedule was changed to `skip` while this tick waited: it gives its place up, or every
      // later tick would be skipped behind it until the wait limit (a day).
      await schedules.unqueueTick(payload.schedule, tickMillis);
    }
    await schedules.recordSkip(payload.schedule, tickMillis, reason);
    logger.warn({ activeJobId: outcome.activeJobId, waitedMs }, `tick skipped: ${reason}`);
  };
}

/**
 * A tick that runs late, after no worker ran for a while (all stopped, or restarting): BullMQ keeps
 * only a scheduler's next tick, so this one runs now and the ones due since never come. They
 * vanished without a word (a helper: 11 of a 5-s schedule across a worker's restart, `schedule
 * list` still saying `skipped 0`); now they are counted (`missed`), logged and in the tick log.
 */
async function noteMissedTicks(schedules: ScheduleStore, name: string, tickMillis: number, logger: Logger): Promise<void> {
  const schedule = await schedules.get(name);
  // Paused, no tick would have started a run.
  if (!schedule || schedule.pausedAt !== null) return;
  const until = Date.now() - MISSED_SLACK_MS;
  let missed = 0;
  let last = tickMillis;
  try {
    for (let next = nextScheduleTick(schedule.cron, schedule.tz, tickMillis); next <= until && missed < MISSED_COUNT_LIMIT; next = nextScheduleTick(schedule.cron, schedule.tz, next)) {
      missed += 1;
      last = next;
    }
  } catch {
    return; // a pattern that no longer parses: the run itself says so
  }
  if (missed === 0) return;
  await schedules.recordMissed(name, tickMillis, missed, last);
  logger.warn({ missed, lastMissed: new Date(last).toISOString(), lateMs: Date.now() - tickMillis }, `${missed === MISSED_COUNT_LIMIT ? 'at least ' : ''}${missed} later ticks never came while no worker ran; this one runs late`);
}

/**
 * Whether a re-queued tick is still the one waiting. A change to skip dropped it, and a change back
 * to queue may have let a later tick take its place: both would wait, and both run.
 */
async function stillWaiting(schedules: ScheduleStore, name: string, tickMillis: number): Promise<'queued' | 'not-queueing'> {
  return (await schedules.queuedTick(name)) === tickMillis ? 'queued' : 'not-queueing';
}

/**
 * Whether the schedule a re-queued tick waited on still exists: a schedule added anew under its
 * name has another creation time. A tick queued before the payload carried one (an older version)
 * is the schedule's only while it is still the one waiting: a new schedule's own ticks all come
 * after it was added, so none waits under this older tick.
 */
async function sameScheduleAsQueued(schedules: ScheduleStore, name: string, tickMillis: number, scheduleCreatedAt: number | undefined): Promise<boolean> {
  const schedule = await schedules.get(name);
  if (!schedule) return false;
  if (scheduleCreatedAt === undefined) return (await schedules.queuedTick(name)) === tickMillis;
  return schedule.createdAt === scheduleCreatedAt;
}

/** The tick waiting under `--on-overlap queue`; one left behind by a crash expires with the wait limit. */
async function waitingTick(schedules: ScheduleStore, name: string): Promise<number | null> {
  const tick = await schedules.queuedTick(name);
  if (tick === null || Date.now() - tick < QUEUE_WAIT_LIMIT_MS + 60_000) return tick;
  await schedules.unqueueTick(name, tick);
  return null;
}
