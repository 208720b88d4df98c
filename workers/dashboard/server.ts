import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyFormbody from '@fastify/formbody';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';

import { ConfigError } from '../../src/errors.js';
import { readPrefixSlot } from '../../src/redis/redis-client.js';
import { isRedisOutage, type RedisAnswerWatch, withinRedisDeadline } from '../../src/redis/redis-deadline.js';
import type { Services } from '../services.js';
import { registerApi } from './api.js';
import { isLoopbackHost, registerAuth } from './auth.js';
import { createMetricsEndpoint } from './metrics-endpoint.js';
import { registerOriginChecks } from './origin-checks.js';
import { dashboardPage } from './page.js';
import { DashboardState, type DashboardSources } from './snapshot.js';
import { gateRates, storedSchedules } from './sources.js';

/** On every response: no framing by other sites; styles and fonts from the dashboard only (why: buildDashboard). */
const CONTENT_SECURITY_POLICY = "frame-ancestors 'none'; style-src 'self' 'unsafe-inline'; font-src 'self' data:";

export interface DashboardOptions {
  host: string;
  /** EMBEDQ_DASHBOARD_TOKEN; required unless `host` is loopback. */
  token?: string | undefined;
  /** Seconds between snapshots pushed to open pages (Default: 1). */
  refreshMs?: number;
  /** Where rate figures and schedules come from (Default: configured limits, no schedules). */
  sources?: Partial<DashboardSources>;
}

export interface Dashboard {
  app: FastifyInstance;
  state: DashboardState;
}

/**
 * `embedq dashboard`: the live page, the JSON API, Bull Board at /queues, /metrics and /healthz,
 * all reading the Redis state the CLI reads.
 */
export async function buildDashboard(services: Services, options: DashboardOptions): Promise<Dashboard> {
  if (!options.token && !isLoopbackHost(options.host)) {
    throw new ConfigError(`dashboard: refusing to listen on ${options.host} without EMBEDQ_DASHBOARD_TOKEN (anyone who reaches it could cancel jobs)`);
  }
  const sources: DashboardSources = { rates: gateRates(services), schedules: storedSchedules(services), ...options.sources };
  const state = new DashboardState(services, sources, { intervalMs: options.refreshMs ?? 1_000, jobLimit: 50 });
  const app: FastifyInstance = Fastify({
    // Requests are not logged (the page polls); warnings and errors are.
    loggerInstance: services.logger.child({ component: 'dashboard' }, { level: 'warn' }) as FastifyBaseLogger,
    // Open pages hold SSE connections forever; closing must not wait for them.
    forceCloseConnections: true,
  });
  // No page of ours may be framed by another site: a click inside the frame is same-origin, and
  // passed the Origin check (clickjacking a tokenless dashboard's cancel button). Styles and fonts
  // come from the dashboard only: Bull Board's page links a stylesheet on fonts.googleapis.com, which
  // held the page blank until it timed out where that host cannot be reached (it falls back to the
  // system's fonts), and told Google of every visit.
  app.addHook('onSend', async (_request, reply) => {
    reply.header('x-frame-options', 'DENY');
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    reply.header('x-content-type-options', 'nosniff');
  });
  await app.register(fastifyCookie);
  await app.register(fastifyFormbody);
  // Before the token check: a forged request is refused whether or not it carries the cookie.
  registerOriginChecks(app, { loopbackHostOnly: !options.token });
  registerAuth(app, options.token);

  // With Redis down, a read fails at once (failWhileUnreachable): say so as 503, not as a 500.
  // So is a Redis that answers nothing within REDIS_ANSWER_MS (redis-deadline.ts).
  app.setErrorHandler((error, _request, reply) => {
    if (!isRedisOutage(error)) return reply.send(error);
    return reply.code(503).send(redisUnavailableBody(error));
  });
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(dashboardPage()));
  // Browsers ask for it on every page; a 404 put an error in their console.
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send());
  // For a liveness probe: the process serves. /healthz answers 503 while Redis is away, and a
  // liveness probe on it restarted the dashboard in every Redis outage, losing the last figures
  // the page keeps showing (and its throughput charts).
  app.get('/livez', async () => ({ ok: true }));
  app.get('/healthz', async (_request, reply) => {
    // Commands wait for a reconnect (maxRetriesPerRequest: null), so the probe bounds its own wait.
    const redis = await withinRedisDeadline(readPrefixSlot(services.redis, services.settings.redisPrefix), 2_000).then(
      () => true,
      () => false,
    );
    return reply.code(redis ? 200 : 503).send({ ok: redis, redis });
  });
  const metrics = createMetricsEndpoint(services, sources.rates);
  app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await state.deadline.within(metrics.render())));
  registerApi(app, services, state, sources);

  // Bull Board shows BullMQ's own view of the queues, read-only: the dashboard writes no pipeline
  // state except cancel and retry (DESIGN), and Bull Board has no auth of its own (the hook above covers it).
  const board = new BoardAdapter(state.deadline);
  board.setBasePath('/queues');
  createBullBoard({
    queues: Object.values(services.queues).map((queue) => new BullMQAdapter(queue, { readOnlyMode: true })),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: 'embedq' } },
  });
  await app.register(board.registerPlugin(), { prefix: '/queues' });

  app.addHook('onReady', async () => state.start());
  app.addHook('onClose', async () => state.stop());
  return { app, state };
}

function redisUnavailableBody(error: Error): { error: string; code: 'REDIS_UNAVAILABLE' } {
  return { error: `Redis is unreachable: ${error.message}`, code: 'REDIS_UNAVAILABLE' };
}

type BoardRoutes = Parameters<FastifyAdapter['setApiRoutes']>[0];

/**
 * Bull Board answers every failure of its API with 500 (its own error handler, in its own plugin),
 * and its status type lists no 503; an unreachable Redis is a 503 there too, as on the rest of the
 * dashboard. Its reads get the same deadline as the dashboard's own: against a Redis that answered
 * nothing, its API waited for as long as that lasted.
 */
class BoardAdapter extends FastifyAdapter {
  constructor(private readonly deadline: RedisAnswerWatch) {
    super();
  }

  override setApiRoutes(routes: BoardRoutes): this {
    super.setApiRoutes(routes.map((route) => ({ ...route, handler: async (request) => this.deadline.within(Promise.resolve(route.handler(request))) })));
    return this;
  }

  override setErrorHandler(handler: Parameters<FastifyAdapter['setErrorHandler']>[0]): this {
    return super.setErrorHandler((error) =>
      isRedisOutage(error) ? { status: 503 as ReturnType<typeof handler>['status'], body: redisUnavailableBody(error) } : handler(error),
    );
  }
}
