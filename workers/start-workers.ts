import { Worker, type Job } from 'bullmq';

import { EmbedBatchPayload, FinalizeJobPayload, SplitCorpusPayload, WriteShardPayload } from '../jobs/payloads.js';
import { cappedExponentialBackoff, EMBED_QUEUE_NAMES, JOB_NAMES, LEGACY_EMBED_QUEUE, QUEUES, takesEmbedSteps } from '../jobs/queues.js';
import { scheduleRepeatStrategy } from '../jobs/schedule-next-tick.js';
import type { ScheduleDefinition } from '../jobs/schedule-store.js';
import { liveWorkers } from '../src/metrics/read-metrics.js';
import { processIdentity } from '../src/process-identity.js';
import { pacingDisagreement, pacingOf } from '../src/rate/fleet-pacing.js';
import { watchRedisAnswers } from '../src/redis/redis-liveness.js';
import { readRedisMemory, redisMemoryProblem } from '../src/redis/redis-memory.js';
import { removeStaleShardCopies } from '../src/reuse/previous-shards.js';
import { watchClockSkew } from './clock-watch.js';
import { embedBatch, type ThrottlePolicy } from './embed-batch.js';
import { failCorpusJobOf, sweepFailedJobs } from './fail-on-lost-jobs.js';
import { finalizeJob } from './finalize-job.js';
import { ProviderBackoff } from './provider-backoff.js';
import { RedisFullBrake } from './redis-full-brake.js';
import { processor, WorkerStoppingError } from './run-job.js';
import { readScheduleFile, RESTORE_INTERVAL_MS, restoreLostSchedules } from './schedule-file.js';
import { scheduleTickProcessor } from './schedule-tick.js';
import type { Services } from './services.js';
import { splitCorpus } from './split-corpus.js';
import { writeShard } from './write-shard.js';

export interface WorkerPoolOptions {
  /** Embed requests in flight in this process, per model (Default: settings.worker.concurrency). */
  concurrency?: number;
  /**
   * A schedules file (EMBEDQ_SCHEDULES_FILE) and its definitions as read at start: what Redis lost
   * is put back, checked every `intervalMs`, from the file as it is then (a ConfigMap updated in
   * place counts; a file that no longer reads keeps the last good definitions).
   */
  schedules?: { file: string; definitions: readonly ScheduleDefinition[]; intervalMs?: number };
  /** When 429s that keep coming hand an embed step back to its queue (Default: DEFAULT_THROTTLE_POLICY; tests shorten it). */
  throttling?: ThrottlePolicy;
}

export interface WorkerPool {
  /**
   * Stops taking jobs and waits for the running ones to finish (graceful drain); with `force`, does
   * not wait for them (their locks lapse and another worker takes them over).
   */
  close(options?: { force?: boolean }): Promise<void>;
}

/**
 * BullMQ's errors for a step whose lock this worker no longer holds: it could not renew the lock in
 * time (paused by SIGSTOP, a frozen VM or swap; cut off from Redis), or the step is gone. Expected
 * and harmless (the step goes back to the queue and the step fence keeps this worker from writing
 * for it), so one line, no stack.
 */
const LOST_LOCK = /^(could not renew lock for job |Missing lock for job |Lock mismatch for job |Missing key for job )/;
const LOST_LOCK_MESSAGE =
  "a step's lock was lost: this worker could not renew it in time (paused, or cut off from Redis) or the step is gone; the step runs again, from its queue, and nothing of this worker's is written for it";

function isLostLockError(error: Error): boolean {
  return LOST_LOCK.test(error.message);
}

/** How often a worker looks for the `--reuse` temporary copies of workers that were killed. */
const STALE_COPIES_CHECK_MS = 10 * 60_000;

/** Runs every processor of the pipeline in this process; any number of processes may share one Redis. */
export function startWorkers(services: Services, options: WorkerPoolOptions = {}): WorkerPool {
  const { settings, logger } = services;
  // Aborted when the pool starts to close: the split, which can run for hours, and embed steps still
  // queued for a rate-gate slot give their jobs back instead of holding the drain.
  const stopping = new AbortController();
  const write = processor(services, WriteShardPayload, writeShard);
  const finalize = processor(services, FinalizeJobPayload, finalizeJob);
  const embed = processor(services, EmbedBatchPayload, (payload, context) => embedBatch(payload, context, options.throttling), stopping.signal);
  const embedConcurrency = options.concurrency ?? settings.worker.concurrency;
  const definitions = [
    { queue: QUEUES.split, concurrency: settings.worker.splitConcurrency, process: processor(services, SplitCorpusPayload, splitCorpus, stopping.signal) },
    // A model's steps wait for its own gate in its own slots, so one model's backlog never holds
    // the slots another model's free quota could use.
    ...EMBED_QUEUE_NAMES.map((queue) => ({ queue, concurrency: embedConcurrency, process: embed })),
    // Steps an older version queued before the per-model queues (a rolling upgrade).
    { queue: LEGACY_EMBED_QUEUE, concurrency: embedConcurrency, process: embed },
    {
      queue: QUEUES.write,
      // Shard writes are CPU and memory heavy (a 10,000-row shard is ~60 MB of vectors): one at a time.
      concurrency: 1,
      process: (job: Job) => (job.name === JOB_NAMES.finalizeJob ? finalize(job) : write(job)),
    },
    { queue: QUEUES.schedule, concurrency: 4, process: scheduleTickProcessor(services) },
  ];
  const brake = new RedisFullBrake(services.redis, logger);
  const providerBackoff = new ProviderBackoff(logger);
  const workers = definitions.map(({ queue, concurrency, process }) => {
    const worker = new Worker(queue, process, {
      connection: services.workerConnection(),
      prefix: settings.redisPrefix,
      concurrency,
      stalledInterval: settings.worker.stalledIntervalMs,
      lockDuration: settings.worker.lockDurationMs,
      // A killed worker's jobs come back after `stalledInterval`; allow that to happen several times.
      maxStalledCount: 10,
      // The worker plans each schedule's next tick as it takes the current one: as the queue does.
      settings: { backoffStrategy: (attemptsMade: number) => cappedExponentialBackoff(attemptsMade), repeatStrategy: scheduleRepeatStrategy },
    });
    worker.on('error', (error) => {
      if (brake.note(error) || services.redisOutage.note(error)) return;
      if (isLostLockError(error)) logger.warn({ queue, reason: error.message }, LOST_LOCK_MESSAGE);
      else logger.warn({ err: error, queue }, 'worker error');
    });
    if (takesEmbedSteps(queue)) {
      providerBackoff.watch(worker);
      worker.on('completed', () => providerBackoff.succeeded());
    }
    worker.on('failed', (job, error) => {
      // A step that failed because Redis refused a write (its attempt is logged at debug level).
      brake.note(error);
      if (takesEmbedSteps(queue)) providerBackoff.failed(error);
      failCorpusJobOf(services, job, error.message, logger.child({ queue })).catch((cause: unknown) =>
        logger.warn({ err: cause, queue }, 'could not fail the corpus job of a failed job'),
      );
    });
    return worker;
  });
  brake.watch(workers);
  const failureSweep = sweepFailedJobs(services, definitions.map(({ queue }) => queue));
  services.shardEncoder.warm();
  const removeStaleCopies = (): void => {
    removeStaleShardCopies().then(
      (removed) => removed.length > 0 && logger.info({ removed }, 'removed the previous-shard copies of workers that stopped'),
      (error: unknown) => logger.warn({ err: error }, 'could not remove stale previous-shard copies'),
    );
  };
  removeStaleCopies();
  const staleCopiesTimer = setInterval(removeStaleCopies, STALE_COPIES_CHECK_MS).unref();
  const schedulesTimer = options.schedules && keepSchedules(services, options.schedules, options.schedules.intervalMs ?? RESTORE_INTERVAL_MS);
  const pacing = pacingOf(settings.dashscope);
  services.metrics.start({ concurrency: embedConcurrency, pacing });
  // A start check Redis did not answer (down, or refusing a rotated password) is the outage log's,
  // said once; each logged its stack.
  const couldNot = (what: string) => (error: unknown): void => services.redisOutage.warnUnlessOutage(logger, error, `could not ${what}`);
  liveWorkers(services.redis, services.settings.redisPrefix).then(
    (workers) => {
      const problem = pacingDisagreement([{ id: processIdentity(), pacing }, ...workers.filter((worker) => worker.id !== processIdentity())]);
      if (problem) logger.warn(problem);
    },
    couldNot("compare this worker's settings with the other workers'"),
  );
  logger.info({ queues: definitions.map(({ queue, concurrency }) => ({ queue, concurrency })) }, 'workers started');
  // `embedq worker` refused to start past the bound; NTP can still break while it runs.
  const clockWatch = watchClockSkew(services, logger, settings.worker.maxClockSkewMs);
  // A Redis that answers nothing but keeps its connections fires no connection error: ask it.
  const liveness = watchRedisAnswers(services.redis, services.settings.redisPrefix, services.redisOutage);
  readRedisMemory(services.redis).then(
    (memory) => {
      const problem = redisMemoryProblem(memory);
      if (problem) logger.warn({ usedBytes: memory.usedBytes, maxmemoryBytes: memory.maxBytes, maxmemoryPolicy: memory.policy }, problem);
    },
    couldNot('read Redis memory (INFO memory)'),
  );
  return {
    async close({ force = false } = {}) {
      clearInterval(staleCopiesTimer);
      clearInterval(schedulesTimer);
      clockWatch.close();
      liveness.close();
      brake.close();
      providerBackoff.close();
      stopping.abort(new WorkerStoppingError());
      for (const gate of services.rateGates()) gate.cancelQueued(stopping.signal.reason as Error);
      await Promise.all(workers.map((worker) => worker.close(force)));
      await failureSweep.close();
      services.stopWatch.close();
      await services.metrics.stop();
    },
  };
}

/** Puts back the file's schedules Redis lost (a Redis restarted without persistence), now and every `intervalMs`. */
function keepSchedules(services: Services, schedules: { file: string; definitions: readonly ScheduleDefinition[] }, intervalMs: number): NodeJS.Timeout {
  const logger = services.logger.child({ component: 'schedules-file', file: schedules.file });
  let definitions = schedules.definitions;
  let unreadable: string | undefined;
  const reread = async (): Promise<void> => {
    try {
      definitions = await readScheduleFile(schedules.file);
      unreadable = undefined;
    } catch (error) {
      // Said once per new problem, not every minute; the last good definitions stay in use.
      const message = error instanceof Error ? error.message : String(error);
      if (message !== unreadable) logger.error({ err: error }, 'schedules file unreadable; the last good version stays in use');
      unreadable = message;
    }
  };
  const check = (): void => {
    reread()
      .then(() => restoreLostSchedules(services, definitions, logger))
      .catch((error: unknown) => services.redisOutage.warnUnlessOutage(logger, error, 'could not check the schedules against the schedules file'));
  };
  check();
  return setInterval(check, intervalMs).unref();
}
