import type { FastifyInstance, FastifyReply } from 'fastify';

import { cancelCorpusJob, retryCorpusJob } from '../../jobs/enqueue.js';
import { settleStopped } from '../settle-stopped.js';
import { JobLostError } from '../../jobs/job-errors.js';
import { QUEUES } from '../../jobs/queues.js';
import type { Services } from '../services.js';
import { snapshotStream } from './event-stream.js';
import { backlogOf, embedDepth, type DashboardSources, type DashboardState } from './snapshot.js';

/**
 * The JSON API the page uses and scripts can use. Cancel and retry call the same functions as
 * `embedq cancel` and `embedq retry`; nothing else here writes.
 */
export function registerApi(app: FastifyInstance, services: Services, state: DashboardState, sources: DashboardSources): void {
  app.get('/api/jobs', async () => (await state.fresh()).jobs);

  app.get<{ Params: { id: string } }>('/api/jobs/:id', async (request, reply) => {
    const job = await state.view(request.params.id);
    return job ?? reply.code(404).send({ error: `no corpus job ${request.params.id}` });
  });

  app.post<{ Params: { id: string } }>('/api/jobs/:id/cancel', async (request, reply) => {
    const { id } = request.params;
    const result = await lostAs404(reply, () => cancelCorpusJob(services.corpora, id));
    if (result === undefined) return reply;
    if (!result.cancelled) return reply.code(409).send({ error: `cannot cancel ${id}: ${result.message}` });
    // As `embedq cancel`: the output is free again once the job's steps have stopped.
    return { id, cancelled: true, settled: await settleStopped(services, id) };
  });

  app.post<{ Params: { id: string } }>('/api/jobs/:id/retry', async (request, reply) => {
    const { id } = request.params;
    const result = await lostAs404(reply, () => retryCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() }, id));
    if (result === undefined) return reply;
    if (!result.retried) return reply.code(409).send({ error: `cannot retry ${id}: ${result.message}` });
    return { id, retried: true, generation: result.generation, rewritten: result.rewritten };
  });

  app.get('/api/schedules', async () => state.deadline.within(sources.schedules.list()));
  app.get('/api/workers', async () => (await state.fresh()).workers);
  app.get('/api/rates', async () => state.deadline.within(sources.rates.read()));
  /**
   * Queue depths, and `embed`: every embed queue together, each model's and the legacy one (each
   * state summed; it stands for the legacy queue's own entry). KEDA's metrics-api trigger reads
   * `embed.backlog`.
   */
  app.get('/api/queues', async () => {
    const { queues } = await state.fresh();
    const embed = embedDepth(queues);
    return {
      ...Object.fromEntries(Object.entries(queues).map(([name, depth]) => [name, { ...depth, backlog: backlogOf(depth) }])),
      embed: { ...embed, backlog: backlogOf(embed) },
    };
  });

  /** Server-sent events: one snapshot a tick, as long as the page is open. */
  app.get('/api/events', (request, reply) => {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    // Node sends a HEAD response's headers only on end(): no write ever flushes them.
    if (request.method === 'HEAD') return void reply.raw.end();
    const stream = snapshotStream(reply.raw);
    void state.latest().then((snapshot) => stream.send(snapshot), () => undefined);
    const unsubscribe = state.subscribe((snapshot) => stream.send(snapshot));
    request.raw.once('close', () => {
      unsubscribe();
      stream.close();
    });
  });
}

/** A job Redis no longer has (flushed, restarted without persistence) is a 404 with the CLI's message. */
async function lostAs404<T>(reply: FastifyReply, action: () => Promise<T>): Promise<T | undefined> {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof JobLostError)) throw error;
    await reply.code(404).send({ error: error.message, code: error.code });
    return undefined;
  }
}
