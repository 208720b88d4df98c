import { isRedisUnreachableError } from './redis-client.js';

/**
 * How long a read of Redis may take before it counts as Redis not answering. A Redis that keeps
 * the connection open but answers nothing (stopped, CLIENT PAUSE, a network that drops packets, a
 * Redis swapping) never fails a command by itself: the dashboard's endpoints answered ~20 s late
 * and froze the page on old figures, `submit --wait` said nothing for as long as it lasted, and the
 * workers never noticed it. Used by the dashboard, `--wait` and the workers' liveness check.
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

/** Whether this failure is a Redis outage: Redis down, or not answering (the dashboard answers 503 REDIS_UNAVAILABLE). */
export function isRedisOutage(error: unknown): error is Error {
  return isRedisUnreachableError(error) || error instanceof RedisNotAnsweringError;
}
