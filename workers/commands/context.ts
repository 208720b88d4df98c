import { RedisFullError, RedisUnavailableError } from '../../jobs/job-errors.js';
import { loadSettings } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { credentialsRefused, describeRedisTarget, isRedisUnreachableError, missingDatabaseProblem, redisAuthRefusal, standaloneSeedProblem } from '../../src/redis/redis-client.js';
import { isRedisFullError, readRedisMemory, redisMemoryProblem } from '../../src/redis/redis-memory.js';
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
  // The socket's own reason (connect ECONNREFUSED …) says more than the command's give-up.
  let connectionError: Error | undefined;
  services.redis.on('error', (error: Error) => (connectionError = error));
  const unreachable = (): RedisUnavailableError =>
    new RedisUnavailableError(
      `cannot reach Redis at ${describeRedisTarget(redisTarget(settings))} (${connectionError ? connectionError.message : `no answer within ${COMMAND_REDIS_TIMEOUT_MS / 1000} s`})`,
    );
  try {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(unreachable()), COMMAND_REDIS_TIMEOUT_MS);
    });
    try {
      await Promise.race([services.redis.ping(), timeout]);
    } catch (error) {
      // A cluster's refusal comes as a connection error; the PING fails with "None of startup nodes".
      const refusal = redisAuthRefusal(error) ?? redisAuthRefusal(connectionError);
      if (refusal) throw credentialsRefused(describeRedisTarget(redisTarget(settings)), refusal);
      const notCluster = await standaloneSeedProblem(redisTarget(settings));
      if (notCluster) throw notCluster;
      throw error instanceof RedisUnavailableError ? error : unreachable();
    } finally {
      clearTimeout(timer);
    }
    const missingDatabase = await missingDatabaseProblem(services.redis, redisTarget(settings));
    if (missingDatabase) throw missingDatabase;
    try {
      return await run(services);
    } catch (error) {
      if (isRedisFullError(error)) throw await redisFull(services);
      // Redis went away while the command ran (`submit --wait` follows a job for hours): said as
      // REDIS_UNAVAILABLE, where it was INTERNAL. The job itself goes on in the workers.
      if (isRedisUnreachableError(error)) {
        throw new RedisUnavailableError(`lost Redis at ${describeRedisTarget(redisTarget(settings))} while the command ran (${(error as Error).message}); jobs go on in the workers, see embedq status once Redis is back`);
      }
      throw error;
    }
  } finally {
    // Closing politely waits for a Redis that is gone; never let that hold the command. A Redis that
    // keeps the connection but answers nothing never answers QUIT either, and the open socket kept
    // the process alive for good after its REDIS_UNAVAILABLE line: then the connection is cut.
    const closed = await Promise.race([services.close().then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 1_000).unref())]);
    if (!closed) services.redis.disconnect();
  }
}

/** The command's write was refused by a full Redis: say so with its figures, not as an internal error. */
async function redisFull(services: Services): Promise<RedisFullError> {
  const problem = await readRedisMemory(services.redis).then((memory) => redisMemoryProblem(memory, { refusedWrite: true }), () => undefined);
  return new RedisFullError(`${problem ?? 'Redis is full: it refuses writes'}; run the command again once there is room`);
}
