import { DelayedError, UnrecoverableError, WaitingError, type Job } from 'bullmq';
import type { z } from 'zod';

import { JobStateLostError } from '../jobs/job-errors.js';
import { stepOwner } from '../jobs/queues.js';
import { EmbedqError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import { processIdentity } from '../src/process-identity.js';
import { isRedisAuthError, isRedisConnectionError } from '../src/redis/redis-client.js';
import { isRedisFullError } from '../src/redis/redis-memory.js';
import type { Services } from './services.js';
import { failCorpusJob } from './fail-corpus-job.js';
import { StaleStepError } from './step-fence.js';

export interface JobContext {
  services: Services;
  /** Child logger with queue, job name, BullMQ job id, corpus job id and attempt (created on first read). */
  readonly logger: Logger;
  /**
   * Aborts, with a {@link WorkerStoppingError}, when this worker process starts to drain (SIGTERM).
   * A step that could wait on for minutes (the split for room, an embed step for a rate-gate slot)
   * throws the reason at its next safe point, and its job goes back to the queue for another
   * worker, with no attempt used.
   */
  readonly stopping: AbortSignal;
  /** The step's BullMQ priority (lower goes first; 0: none): an embed step waits for a rate-gate slot by it. */
  readonly priority: number;
}

/** A step gave its job back to the queue because this worker process is stopping. */
export class WorkerStoppingError extends Error {
  constructor() {
    super('this worker is stopping');
    this.name = 'WorkerStoppingError';
  }
}

/**
 * A step asks to run again later, with no attempt used: what stopped it says "not now", not
 * "broken" (429s that kept coming). Its job waits in its queue's delayed set for `delayMs`, holding
 * no worker slot, then starts over (a batch stored meanwhile, or a job stopped, makes it a no-op).
 * The message says why, for the job's status line; the cause is the last error met.
 */
export class HandBackLaterError extends Error {
  constructor(
    readonly delayMs: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'HandBackLaterError';
  }
}

/**
 * Turns a handler into a BullMQ processor: parses the payload, builds the job's logger, and maps
 * errors to queue outcomes. A permanent error (or the last attempt of a retryable one) fails the
 * whole corpus job with a clear reason, so its other steps stop instead of burning attempts. A
 * step that gives way to a stopping worker (`stopping`) goes back to the queue as it is.
 */
export function processor<Schema extends z.ZodType<{ corpusJobId: string; generation: number }>>(
  services: Services,
  schema: Schema,
  handle: (payload: z.output<Schema>, context: JobContext) => Promise<void>,
  stopping: AbortSignal = new AbortController().signal,
): (job: Job, token?: string) => Promise<void> {
  return async (job, token) => {
    const parsed = schema.safeParse(job.data);
    if (!parsed.success) {
      const owner = job.id === undefined ? undefined : stepOwner(job.id);
      if (owner && (job.data === undefined || job.data === null || Object.keys(job.data as object).length === 0)) {
        // Its record went from Redis (deleted, evicted) while its id stayed queued: the failed-set
        // sweep fails the corpus job named in the id, which otherwise waited for this step forever.
        services.logger.error({ queue: job.queueName, jobId: job.id, corpusJobId: owner.corpusJobId }, 'job record lost from Redis');
        throw new UnrecoverableError(`JOB_STATE_LOST: ${new JobStateLostError(owner.corpusJobId, `step ${job.id}'s record`).message}`);
      }
      services.logger.error({ queue: job.queueName, jobId: job.id, issues: parsed.error.issues }, 'job payload invalid');
      throw new UnrecoverableError(`INVALID_PAYLOAD: ${parsed.error.message}`);
    }
    const payload = parsed.data;
    // Built on first use: a pino child serialises (and redacts) its bindings at once, and an
    // embed job at the info level never logs (about a tenth of BullMQ's own cost per job).
    let child: Logger | undefined;
    const context: JobContext = {
      services,
      stopping,
      priority: job.opts.priority ?? 0,
      get logger() {
        return (child ??= services.logger.child({
          queue: job.queueName,
          job: job.name,
          jobId: job.id,
          corpusJobId: payload.corpusJobId,
          attempt: job.attemptsMade + 1,
        }));
      },
    };
    try {
      await handle(payload, context);
    } catch (thrown) {
      const { logger } = context;
      // Called without a worker's token (a direct call), a step cannot be moved: what it met counts as it is.
      const error = thrown instanceof HandBackLaterError && token === undefined ? thrown.cause : thrown;
      if (error instanceof HandBackLaterError && token !== undefined) {
        await job.moveToDelayed(Date.now() + error.delayMs, token);
        // One line a hand-back, without a stack: a storm's 429s themselves are logged only at debug.
        const cause = error.cause instanceof EmbedqError ? error.cause : undefined;
        logger.info({ code: cause?.code, reason: error.message, delayMs: error.delayMs }, 'step handed back for later; no attempt used');
        // For `embedq status` and the dashboard: the job waits on the provider, it is neither stuck nor failing.
        const why = `${cause ? `${cause.code}: ` : ''}${errorMessage(error.cause ?? error)}`;
        const message = `${job.name} ${error.message}; handed back for ${(error.delayMs / 1000).toFixed(1)} s, no attempt used: ${why}`;
        await services.corpora.jobs.noteRetry(payload.corpusJobId, payload.generation, message).catch(() => undefined);
        throw new DelayedError();
      }
      if (error instanceof WorkerStoppingError && token !== undefined) {
        // Back to waiting, as if never taken: BullMQ counts no attempt for a WaitingError.
        await job.moveToWait(token);
        logger.info('job handed back: this worker is stopping');
        throw new WaitingError();
      }
      if (error instanceof StaleStepError) {
        // Its job ended or moved on while this step was paused: it wrote nothing, and has nothing to do.
        logger.warn({ reason: error.message }, 'step out of date: stopped before writing');
        return;
      }
      const attempts = job.opts.attempts ?? 1;
      const permanent = !(error instanceof EmbedqError) ? false : !error.retryable;
      const lastAttempt = job.attemptsMade + 1 >= attempts;
      if (permanent || lastAttempt) {
        const code = error instanceof EmbedqError ? error.code : 'INTERNAL';
        const reason = permanent ? errorMessage(error) : `gave up after ${attempts} attempts: ${errorMessage(error)}`;
        await failCorpusJob(services, { corpusJobId: payload.corpusJobId, generation: payload.generation, code, step: `${job.name} ${job.id} on ${processIdentity()}`, reason, failingStep: job.id, stopping }, logger);
        // As for attempts below: a failure we classified says all in its code and message; a stack only for the others.
        if (error instanceof EmbedqError) logger.error({ code, reason: error.message }, 'corpus job failed');
        else logger.error({ err: error, code }, 'corpus job failed');
        throw new UnrecoverableError(`${code}: ${reason}`);
      }
      // A full Redis fails every step at once: the workers' RedisFullBrake logs that, in summary.
      if (isRedisFullError(error)) logger.debug({ err: error }, 'job attempt failed: Redis is full; will retry');
      // So does a Redis gone or refusing the credentials (a password rotated): the outage log says
      // that, once; a stack for each step in flight buried its line.
      else if (isRedisConnectionError(error) || isRedisAuthError(error)) logger.debug({ err: error }, 'job attempt failed: Redis is unreachable or refuses the credentials; will retry');
      // A failure we classified (a provider outage, a storage blip) says all in its code and
      // message; its stack (~1.5 KB) on every attempt of every step made an outage's logs megabytes.
      else if (error instanceof EmbedqError) logger.warn({ code: error.code, reason: error.message }, 'job attempt failed; will retry');
      else logger.warn({ err: error }, 'job attempt failed; will retry');
      // For `embedq status` and the dashboard: a job stuck in retries (a provider outage spans
      // minutes of them) says why. Only a note: failing to write it must not change the outcome.
      const code = error instanceof EmbedqError ? `${error.code}: ` : '';
      await services.corpora.jobs.noteRetry(payload.corpusJobId, payload.generation, `${job.name} attempt ${job.attemptsMade + 1} of ${attempts}: ${code}${errorMessage(error)}`).catch(() => undefined);
      throw error;
    }
  };
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
