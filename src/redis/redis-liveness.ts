import { readPrefixSlot, type RedisClient } from './redis-client.js';
import { REDIS_ANSWER_MS, RedisNotAnsweringError, withinRedisDeadline } from './redis-deadline.js';
import type { RedisOutageLog } from './redis-outage-log.js';

/** How long a worker waits between two liveness checks of Redis. */
export const LIVENESS_CHECK_MS = 5_000;

/**
 * Asks Redis for an answer every `everyMs` (readPrefixSlot: on a cluster, the master of the
 * prefix's slot), each with `answerMs` to answer, and tells `outage` how it went: a read left
 * unanswered is an outage (said once, with reminders, as a lost connection is), an answer ends one.
 * A Redis that keeps the connection open but answers nothing (stopped, swapping, a network that
 * drops packets) fires no socket error: a worker went through a 12-minute freeze with no word of
 * Redis, then logged a lost lock for each step it held. One read at a time on a connection the
 * process has anyway; a check still waiting is not doubled.
 */
export function watchRedisAnswers(
  client: RedisClient,
  prefix: string,
  outage: RedisOutageLog,
  options: { everyMs?: number; answerMs?: number } = {},
): { close(): void } {
  const { everyMs = LIVENESS_CHECK_MS, answerMs = REDIS_ANSWER_MS } = options;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const check = async (): Promise<void> => {
    const readyWhenAsked = client.status === 'ready';
    try {
      await withinRedisDeadline(readPrefixSlot(client, prefix), answerMs);
      outage.answered();
    } catch (error) {
      // Only a connection that stayed up is a Redis not answering. One down or reconnecting says
      // so by its own connection errors, and a PING queued while it was down and answered only
      // after the deadline began a second outage just after the first one ended.
      const connectedThroughout = readyWhenAsked && client.status === 'ready';
      if (!(error instanceof RedisNotAnsweringError) || connectedThroughout) outage.note(error);
    }
    if (!closed) timer = setTimeout(() => void check(), everyMs).unref();
  };
  timer = setTimeout(() => void check(), everyMs).unref();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
