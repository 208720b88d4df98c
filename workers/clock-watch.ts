import type { Logger } from '../src/logger.js';
import { clockSkewProblem, clockSkewRefusal, readClockSkew } from '../src/redis/redis-clock.js';
import type { RedisClient } from '../src/redis/redis-client.js';
import type { Services } from './services.js';

/** How often a running worker compares its clock with Redis's (NTP can break while it runs). */
export const CLOCK_CHECK_MS = 60_000;

/** How long the start check waits for TIME: a Redis not answering yet is no reason to refuse. */
const START_CHECK_WAIT_MS = 5_000;

/**
 * `embedq worker` at start: throws the ConfigError of clockSkewRefusal (exit 2) when this machine's
 * clock is further than `maxSkewMs` from Redis's. A Redis that does not answer in time lets the
 * worker start (it waits for Redis anyway); the running check says what it finds later.
 */
export async function refuseSkewedClock(redis: RedisClient, maxSkewMs: number, clock: () => number = Date.now): Promise<void> {
  if (maxSkewMs <= 0) return;
  let timer: NodeJS.Timeout | undefined;
  const skewMs = await Promise.race([
    readClockSkew(redis, clock).catch(() => undefined),
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), START_CHECK_WAIT_MS))),
  ]).finally(() => clearTimeout(timer));
  const refusal = skewMs === undefined ? undefined : clockSkewRefusal(skewMs, maxSkewMs);
  if (refusal) throw refusal;
}

/**
 * Compares this machine's clock with Redis's now and every `intervalMs`, and logs when that
 * changes: a warning past a second, an error past `maxSkewMs`, and a line when it is back in step.
 * Logging each change once keeps a clock that stays off from filling the log.
 */
export function watchClockSkew(services: Pick<Services, 'redis' | 'redisOutage'>, logger: Logger, maxSkewMs: number, options: { intervalMs?: number; clock?: () => number } = {}): { close(): void } {
  let said: 'none' | 'warn' | 'error' = 'none';
  const check = (): void => {
    readClockSkew(services.redis, options.clock).then(
      (skewMs) => {
        if (skewMs === undefined) return; // A reply too slow to tell: the next check will.
        const refusal = clockSkewRefusal(skewMs, maxSkewMs);
        const problem = clockSkewProblem(skewMs);
        const now = refusal ? 'error' : problem ? 'warn' : 'none';
        if (now === said) return;
        const fields = { clockSkewMs: Math.round(skewMs) };
        if (now === 'error') logger.error(fields, refusal!.message);
        else if (now === 'warn') logger.warn(fields, problem!);
        else logger.info(fields, "this machine's clock agrees with Redis's again");
        said = now;
      },
      (error: unknown) => services.redisOutage.warnUnlessOutage(logger, error, "could not compare this machine's clock with Redis's (TIME)"),
    );
  };
  check();
  const timer = setInterval(check, options.intervalMs ?? CLOCK_CHECK_MS).unref();
  return { close: () => clearInterval(timer) };
}
