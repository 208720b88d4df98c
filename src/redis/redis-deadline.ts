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
    super(`Redis has not answered for ${Math.round(afterMs / 1000)} s (paused, overloaded, or the network drops its packets)`);
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

/**
 * Deadlines that remember a Redis not answering: once a read has waited out its deadline, later
 * reads fail at once, until a read is answered (the reads themselves go on, and the first one
 * answered ends it). Without it, every request to the dashboard waited the full 5 s for as long as
 * Redis was paused.
 */
export class RedisAnswerWatch {
  /** When the first read that went unanswered was sent. */
  private unansweredSince: number | undefined;

  /** `read`, or a RedisNotAnsweringError: at once while Redis is known not to answer, else after `ms`. */
  within<T>(read: Promise<T>, ms = REDIS_ANSWER_MS): Promise<T> {
    const sentAt = Date.now();
    // An answer, even an error reply, shows Redis answers again; a lost connection does not.
    read.then(
      () => (this.unansweredSince = undefined),
      (error: unknown) => {
        if (!isRedisOutage(error)) this.unansweredSince = undefined;
      },
    );
    if (this.unansweredSince !== undefined) return Promise.reject(new RedisNotAnsweringError(Date.now() - this.unansweredSince));
    return withinRedisDeadline(read, ms).catch((error: unknown) => {
      if (error instanceof RedisNotAnsweringError) this.unansweredSince ??= sentAt;
      throw error;
    });
  }
}

/** Whether this failure is a Redis outage: Redis down, or not answering (the dashboard answers 503 REDIS_UNAVAILABLE). */
export function isRedisOutage(error: unknown): error is Error {
  return isRedisUnreachableError(error) || error instanceof RedisNotAnsweringError;
}
