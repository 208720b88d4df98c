import { RedisUnavailableError } from '../../jobs/job-errors.js';
import { loadSettings } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { describeRedisTarget } from '../../src/redis/redis-client.js';
import { COMMAND_REDIS_TIMEOUT_MS, createServices, redisTarget, type Services } from '../services.js';

/**
 * Builds services for a CLI command, runs it, and always releases them. Commands that never call
 * DashScope (submit, status, ...) do not need an API key. A command gives up on Redis within
 * ~5 s, with a message naming REDIS_URL or REDIS_CLUSTER_NODES (passwords masked), instead of waiting forever.
 */
export async function withServices<T>(
  run: (services: Services) => Promise<T>,
  options: { requireApiKey?: boolean } = {},
): Promise<T> {
  const settings = loadSettings(process.env, { requireApiKey: options.requireApiKey ?? false });
  // CLI commands log to stderr so stdout stays for results (job ids, JSON).
  const logger = createLogger({ level: settings.log.level === 'info' ? 'warn' : settings.log.level }, process.stderr);
  const services = createServices(settings, logger, { failFast: true });
  const unreachable = (): RedisUnavailableError =>
    new RedisUnavailableError(`cannot reach Redis at ${describeRedisTarget(redisTarget(settings))} (no answer within ${COMMAND_REDIS_TIMEOUT_MS / 1000} s)`);
  try {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(unreachable()), COMMAND_REDIS_TIMEOUT_MS);
    });
    try {
      await Promise.race([services.redis.ping(), timeout]);
    } catch (error) {
      throw error instanceof RedisUnavailableError ? error : unreachable();
    } finally {
      clearTimeout(timer);
    }
    return await run(services);
  } finally {
    // Closing politely waits for a Redis that is gone; never let that hold the command.
    await Promise.race([services.close(), new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  }
}
