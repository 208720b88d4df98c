import { isRedisUnreachableError } from '../../src/redis/redis-client.js';

/**
 * How long a read of Redis may take before the dashboard says Redis is not answering. Its
 * commands wait for a reconnect, and a Redis that keeps the connection open but answers nothing
 * (CLIENT PAUSE, a network that drops packets, a Redis swapping) held every endpoint ~20 s and
 * froze the page on old figures with no word of Redis.
 */
export const REDIS_ANSWER_MS = 5_000;

export class RedisNotAnsweringError extends Error {
  constructor(readonly afterMs: number) {
    super(`Redis has not answered for ${afterMs / 1000} s (paused, overloaded, or the network drops its packets)`);
    this.name = 'RedisNotAnsweringError';
  }
}

/** `read`, or a RedisNotAnsweringError once it has taken `ms`; the read itself goes on. */
export function withinRedisDeadline<T>(read: Promise<T>, ms = REDIS_ANSWER_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new RedisNotAnsweringError(ms)), ms);
  });
  return Promise.race([read, late]).finally(() => clearTimeout(timer));
}

/** Whether the dashboard answers this failure with 503 REDIS_UNAVAILABLE: Redis down, or not answering. */
export function isRedisOutage(error: unknown): error is Error {
  return isRedisUnreachableError(error) || error instanceof RedisNotAnsweringError;
}
