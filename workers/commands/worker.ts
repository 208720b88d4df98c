import type { Command } from 'commander';

import { loadSettings } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { memoryBreakdown } from '../../src/memory-usage.js';
import { assertRedisAccepts } from '../../src/redis/redis-client.js';
import { redisPersistenceProblem } from '../../src/redis/redis-persistence.js';
import { readScheduleFile } from '../schedule-file.js';
import { createServices, redisTarget } from '../services.js';
import { refuseSkewedClock } from '../clock-watch.js';
import { startWorkers } from '../start-workers.js';

/** How long a stopping worker waits for its running jobs (a request takes seconds at most). */
export const DRAIN_TIMEOUT_MS = 60_000;

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run every processor until SIGTERM/SIGINT, then drain running jobs and exit')
    .option('--concurrency <n>', 'DashScope requests in flight per model in this process (each model has its own slots; default: EMBEDQ_CONCURRENCY or 32)')
    .action(async (flags: { concurrency?: string }) => {
      const concurrency = flags.concurrency === undefined ? undefined : Number(flags.concurrency);
      if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0)) {
        throw new ConfigError(`Invalid options:\n- concurrency: must be a whole number above 0, got "${flags.concurrency}"`);
      }
      const settings = loadSettings(process.env, { requireApiKey: true });
      const logger = createLogger(settings.log);
      // A bad schedules file stops the worker at start, naming the file and the schedule.
      const file = settings.schedulesFile;
      const schedules = file === undefined ? undefined : { file, definitions: await readScheduleFile(file) };
      await assertRedisAccepts(redisTarget(settings), 5_000);
      const services = createServices(settings, logger);
      // A clock far off Redis's would run BullMQ's retries and delayed steps at the wrong time.
      await refuseSkewedClock(services.redis, settings.worker.maxClockSkewMs).catch(async (error: unknown) => {
        await services.close();
        throw error;
      });
      const pool = startWorkers(services, { concurrency, schedules });
      // Here, not in startWorkers: the demo's and the tests' private Redis keep nothing on purpose.
      redisPersistenceProblem(services.redis).then(
        (problem) => {
          if (problem) logger.warn(problem);
        },
        (error: unknown) => services.redisOutage.warnUnlessOutage(logger, error, 'could not read Redis persistence (INFO persistence, CONFIG GET save)'),
      );
      // Where the memory is, every 5 s and after each shard (the bench reads these lines).
      const logMemory = (): void => logger.info(memoryBreakdown(services.shardEncoder.lastThreadMemory), 'memory');
      const memoryLog = setInterval(logMemory, 5_000).unref();
      services.shardEncoder.onShardMemory = logMemory;
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          logger.info({ signal }, 'draining');
          // A second signal, or a drain that cannot finish (Redis gone), ends the process anyway;
          // its unfinished jobs come back to other workers when their locks run out.
          process.once('SIGTERM', () => forceExit('second SIGTERM'));
          process.once('SIGINT', () => forceExit('second SIGINT'));
          setTimeout(() => forceExit('drain timed out'), DRAIN_TIMEOUT_MS).unref();
          resolve();
        };
        const forceExit = (reason: string): void => {
          logger.warn({ reason }, 'exiting without a full drain');
          process.exit(1);
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      clearInterval(memoryLog);
      await pool.close();
      await services.close();
      logger.info('worker stopped');
    });
}
