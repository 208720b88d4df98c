import type { Command } from 'commander';

import { loadSettings } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { assertRedisAccepts } from '../../src/redis/redis-client.js';
import { createServices, redisTarget } from '../services.js';
import { listenError } from './listen-error.js';

/** How long a stopping dashboard waits for its connections to close. */
const SHUTDOWN_TIMEOUT_MS = 10_000;

export function registerDashboardCommand(program: Command): void {
  program
    .command('dashboard')
    .description('serve the live page, /api/*, Bull Board at /queues, /metrics and /healthz until SIGTERM/SIGINT')
    .option('--port <port>', 'TCP port', '8080')
    .option('--host <host>', 'address to bind; anything but loopback needs EMBEDQ_DASHBOARD_TOKEN', '127.0.0.1')
    .action(async (flags: { port: string; host: string }) => {
      const port = Number(flags.port);
      if (!(Number.isInteger(port) && port >= 0 && port < 65_536)) throw new ConfigError(`Invalid options:\n- port: must be 0-65535, got "${flags.port}"`);
      const settings = loadSettings(process.env, { requireApiKey: false });
      const token = process.env.EMBEDQ_DASHBOARD_TOKEN || undefined;
      const logger = createLogger(settings.log);
      // Credentials Redis refuses end the dashboard at start, as they end a worker (it served 500s
      // and logged a WRONGPASS stack for each of them, ~18 a second).
      await assertRedisAccepts(redisTarget(settings), 5_000);
      const services = createServices(settings, logger, { failWhileUnreachable: true });
      try {
        // Schedules and the adaptive gate's figures plug in here as `sources` (see dashboard/sources.ts).
        // Loaded when run: no other command needs fastify and Bull Board (README, "Bounded memory").
        const { buildDashboard } = await import('../dashboard/server.js');
        const { app } = await buildDashboard(services, { host: flags.host, token });
        const address = await app.listen({ host: flags.host, port }).catch(async (error: unknown) => {
          // Not listening, the dashboard must not live on: its refresh timer kept the process
          // running, logging a failed refresh every second once the services had closed.
          await app.close();
          throw listenError(error, flags.host, port);
        });
        logger.info({ address, auth: token ? 'token' : 'none' }, 'dashboard listening');
        await new Promise<void>((resolve) => {
          process.once('SIGTERM', () => resolve());
          process.once('SIGINT', () => resolve());
        });
        // Closing waits on Redis (a refresh in flight, quitting connections); with Redis gone that
        // would never end, so a second signal or SHUTDOWN_TIMEOUT_MS exits anyway.
        const forceExit = (reason: string): void => {
          logger.warn({ reason }, 'dashboard exiting without a clean close');
          process.exit(1);
        };
        process.once('SIGTERM', () => forceExit('second SIGTERM'));
        process.once('SIGINT', () => forceExit('second SIGINT'));
        setTimeout(() => forceExit('close timed out'), SHUTDOWN_TIMEOUT_MS).unref();
        await app.close();
      } finally {
        await services.close();
      }
    });
}
