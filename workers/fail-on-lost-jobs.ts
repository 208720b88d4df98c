import type { Job } from 'bullmq';

import type { Logger } from '../src/logger.js';
import { redisNow } from '../src/redis/redis-clock.js';
import { isRedisFullError } from '../src/redis/redis-memory.js';
import { stepOwner } from '../jobs/queues.js';
import { failCorpusJob } from './fail-corpus-job.js';
import type { Services } from './services.js';

/**
 * BullMQ fails some jobs outside our processor's catch: a payload that does not parse, a job that
 * "stalled more than allowable limit" (its workers kept dying), a lock lost for good. Those must
 * fail their corpus job too, with the reason, or it would stay `running` and every `--wait` would
 * wait forever (invariant 8). Both paths are fenced by generation and idempotent, so every worker
 * process may react to the same failure.
 */
export async function failCorpusJobOf(services: Services, job: Pick<Job, 'id' | 'name' | 'data' | 'opts' | 'attemptsMade'> | undefined, reason: string, logger: Logger): Promise<void> {
  if (!job) return;
  const data = job.data as { corpusJobId?: unknown; generation?: unknown } | undefined;
  // A step whose record Redis lost has no payload left: its id names its corpus job.
  const owner =
    typeof data?.corpusJobId === 'string'
      ? { corpusJobId: data.corpusJobId, generation: typeof data.generation === 'number' ? data.generation : undefined }
      : job.id === undefined ? undefined : stepOwner(job.id);
  if (!owner) return;
  const attempts = job.opts.attempts ?? 1;
  const final = /UnrecoverableError|allowable limit|INVALID_PAYLOAD|JOB_STATE_LOST/.test(reason) || job.attemptsMade >= attempts;
  if (!final) return;
  const coded = /^([A-Z][A-Z_]+): /.exec(reason);
  const code = coded?.[1] ?? (/allowable limit/.test(reason) ? 'JOB_STALLED' : 'INTERNAL');
  // The record keeps `<step>: <reason>` under its code: a reason that starts with it said it twice.
  const why = coded ? reason.slice(coded[0].length) : reason;
  // Bound as a processor's job logger binds them: what failCorpusJob logs names the job once.
  const jobLogger = logger.child({ jobId: job.id, corpusJobId: owner.corpusJobId });
  const failed = await failCorpusJob(services, { corpusJobId: owner.corpusJobId, generation: owner.generation, code, step: [job.name, job.id].filter(Boolean).join(' '), reason: why }, jobLogger);
  if (failed) jobLogger.error({ code, reason }, 'corpus job failed by a queue failure');
}

/** How often the failed sets are swept (by one worker of the deployment at a time). */
export const FAILED_SWEEP_MS = 2_000;
/** How often the sweeper removes failed steps older than the retention. */
const FAILED_CLEAN_MS = 60_000;

/**
 * A failed step holds its lines' text; BullMQ keeps the last 1,000 of each queue however old, so
 * corpus text stayed in Redis long after its job's record went with EMBEDQ_JOB_RETENTION_DAYS
 * (up to ~300 MB of long documents a queue). They go with the retention too (0 keeps them).
 */
async function removeFailedAfterRetention(services: Services, queues: readonly string[]): Promise<void> {
  const retentionMs = services.settings.jobRetentionMs;
  if (retentionMs <= 0) return;
  for (const name of queues) await services.queues[name as keyof Services['queues']].clean(retentionMs, 1_000, 'failed');
}

/**
 * Fails the corpus jobs of steps BullMQ failed where no processor of ours saw it: a job past its
 * stall limit is failed inside BullMQ's stalled-job check, whose worker emits only `stalled`. Every
 * few seconds one worker (whichever takes the sweep's lock) reads each queue's `failed` set from
 * where the last sweep stopped (a cursor in Redis, by failure time) and fails their corpus jobs.
 * Keys: `<prefix>:failed-sweep:lock` (the sweeper's pid) and `<prefix>:failed-sweep:cursor:<queue>`.
 *
 * It replaces a QueueEvents listener per queue in every worker process: those read every event of
 * every job to catch a few (Redis served each event once per worker), and missed what happened
 * while no worker listened, or while one lagged more than the event stream's 100 entries. The
 * failed set is BullMQ's record of failures (the last 1,000 are kept), so a failure is acted on
 * even if every worker was down when it happened.
 */
export function sweepFailedJobs(services: Services, queues: readonly string[], intervalMs = FAILED_SWEEP_MS): { close(): Promise<void> } {
  const { redis, logger } = services;
  const base = `${services.settings.redisPrefix}:failed-sweep`;
  let running: Promise<void> | undefined;
  let cleanedAt = 0;
  const sweep = async (): Promise<void> => {
    // One sweeper per interval across the deployment; the lock simply expires (its value says who).
    if ((await redis.set(`${base}:lock`, String(process.pid), 'PX', intervalMs, 'NX')) !== 'OK') return;
    for (const name of queues) await sweepQueue(services, name, `${base}:cursor:${name}`);
    if (Date.now() - cleanedAt >= FAILED_CLEAN_MS) {
      cleanedAt = Date.now();
      await removeFailedAfterRetention(services, queues);
    }
  };
  const tick = (): void => {
    if (running) return;
    running = sweep()
      // A full Redis refuses the sweep's lock too; the workers' RedisFullBrake reports that.
      .catch((error: unknown) => {
        // An outage (or refused credentials) is the outage log's to report, once.
        if (!isRedisFullError(error)) services.redisOutage.warnUnlessOutage(logger, error, 'could not sweep failed jobs');
      })
      .finally(() => (running = undefined));
  };
  tick();
  const timer = setInterval(tick, intervalMs).unref();
  return {
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}

/**
 * Failures are stamped with the clock of the worker that failed them, so the last few seconds' are
 * read again by the next sweeps (a worker's clock a little behind could still add one there); older
 * ones are passed for good. "Now" is Redis's clock, and the cursor never passes Redis's now minus
 * this: a failure stamped in the future (by a worker whose clock is ahead) is read by every sweep
 * until Redis's clock passes it (failing a corpus job again changes nothing). Before, the sweeper's
 * own clock was used: a sweeper an hour ahead moved the cursor past a failure stamped by a worker
 * an hour ahead, and every failure stamped by a correct clock in that hour was never read.
 */
const SETTLED_MS = 10_000;

async function sweepQueue(services: Services, name: string, cursorKey: string): Promise<void> {
  const queue = services.queues[name as keyof Services['queues']];
  const settled = (await redisNow(services.redis)) - SETTLED_MS;
  // A cursor past that was moved by a clock ahead (an older version's sweeper): read from there.
  const stored = Number((await services.redis.get(cursorKey)) ?? 0);
  const from = Math.min(stored, settled);
  let next = from;
  // All of them at once: BullMQ keeps the last 1,000 (jobs/queues.ts). Reading one again is
  // harmless: failing a corpus job is idempotent and fenced by generation.
  const failed = await services.redis.zrangebyscore(queue.keys.failed!, from, '+inf', 'WITHSCORES');
  const logger = services.logger.child({ queue: name });
  for (let i = 0; i < failed.length; i += 2) {
    const job = await queue.getJob(failed[i]!);
    if (job) await failCorpusJobOf(services, job, job.failedReason ?? 'failed', logger);
    const failedAt = Number(failed[i + 1]);
    if (failedAt < settled) next = Math.max(next, failedAt + 1);
  }
  if (next !== stored) await services.redis.set(cursorKey, String(next));
}
