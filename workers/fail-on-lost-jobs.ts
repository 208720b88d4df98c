import { QueueEvents, type Job } from 'bullmq';

import type { Logger } from '../src/logger.js';
import type { Services } from './services.js';

/**
 * BullMQ fails some jobs outside our processor's catch: a payload that does not parse, a job that
 * "stalled more than allowable limit" (its workers kept dying), a lock lost for good. Those must
 * fail their corpus job too, with the reason, or it would stay `running` and every `--wait` would
 * wait forever (invariant 8). Both paths are fenced by generation and idempotent, so every worker
 * process may react to the same failure.
 */
export async function failCorpusJobOf(services: Services, job: Pick<Job, 'id' | 'name' | 'data' | 'opts' | 'attemptsMade'> | undefined, reason: string, logger: Logger): Promise<void> {
  const data = job?.data as { corpusJobId?: unknown; generation?: unknown } | undefined;
  if (!job || typeof data?.corpusJobId !== 'string') return;
  const attempts = job.opts.attempts ?? 1;
  const final = /UnrecoverableError|allowable limit|INVALID_PAYLOAD/.test(reason) || job.attemptsMade >= attempts || reason.startsWith('INVALID_PAYLOAD');
  if (!final) return;
  const generation = typeof data.generation === 'number' ? data.generation : undefined;
  const code = /^([A-Z][A-Z_]+):/.exec(reason)?.[1] ?? (/allowable limit/.test(reason) ? 'JOB_STALLED' : 'INTERNAL');
  const failed = await services.corpora.jobs.markFailed(data.corpusJobId, `${job.name} ${job.id}: ${reason}`, code, generation);
  if (failed) logger.error({ corpusJobId: data.corpusJobId, jobId: job.id, code, reason }, 'corpus job failed by a queue failure');
}

/** Listens to a queue's `failed` events (which include stalled-limit failures) across all workers. */
export function watchQueueFailures(services: Services, queue: string): QueueEvents {
  const events = new QueueEvents(queue, { connection: services.workerConnection(), prefix: services.settings.redisPrefix });
  events.on('error', (error) => services.logger.warn({ err: error, queue }, 'queue events error'));
  events.on('failed', ({ jobId, failedReason }) => {
    void (async () => {
      const job = await services.queues[queue as keyof Services['queues']].getJob(jobId);
      await failCorpusJobOf(services, job, failedReason, services.logger.child({ queue }));
    })().catch((error: unknown) => services.logger.warn({ err: error, queue, jobId }, 'could not handle a failed job'));
  });
  return events;
}
