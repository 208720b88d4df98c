import type { Command } from 'commander';

import { loadSettings } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { createServices } from '../services.js';
import { startWorkers } from '../start-workers.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run every processor until SIGTERM/SIGINT, then drain running jobs and exit')
    .option('--concurrency <n>', 'DashScope requests in flight in this process (default: EMBEDQ_CONCURRENCY or 32)')
    .action(async (flags: { concurrency?: string }) => {
      const settings = loadSettings(process.env, { requireApiKey: true });
      const logger = createLogger(settings.log);
      const services = createServices(settings, logger);
      const pool = startWorkers(services, { concurrency: flags.concurrency ? Number(flags.concurrency) : undefined });
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          logger.info({ signal }, 'draining');
          resolve();
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await pool.close();
      await services.close();
      logger.info('worker stopped');
    });
}
