import type { Worker } from 'bullmq';

import type { Logger } from '../src/logger.js';
import { isRedisFullError, readRedisMemory, type RedisMemory } from '../src/redis/redis-memory.js';
import type { RedisClient } from '../src/redis/redis-client.js';

/** How long the workers rest each time a write is refused. */
export const REDIS_FULL_PAUSE_MS = 5_000;
/** While Redis stays full, a reminder at most this often. */
const REMINDER_MS = 60_000;

/**
 * A full Redis (maxmemory reached under noeviction) refuses every write, and BullMQ's workers retry
 * a refused fetch at once, in a loop: measured, 140 refusals a second from one worker process, each
 * logged with its command's arguments (22 MB of logs a minute), and as many Redis calls. Nothing
 * can move until memory is freed, so on a refusal this process's workers rest for a few seconds,
 * then try again; the operator gets one error naming the cause, a reminder a minute, and a line
 * when writes are accepted again. The jobs go on by themselves.
 */
export class RedisFullBrake {
  #workers: readonly Worker[] = [];
  #resting: NodeJS.Timeout | undefined;
  #fullSince: number | undefined;
  #lastReminder = 0;
  #refusals = 0;
  #recovered: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly logger: Logger,
    private readonly pauseMs = REDIS_FULL_PAUSE_MS,
  ) {}

  watch(workers: readonly Worker[]): void {
    this.#workers = workers;
  }

  /** Any error of a worker or a step. True when it was Redis refusing a write (then it is logged here, in summary). */
  note(error: unknown): boolean {
    if (!isRedisFullError(error)) return false;
    this.#refusals += 1;
    clearTimeout(this.#recovered);
    this.#recovered = undefined;
    if (this.#resting || this.#closed) return true;
    const now = Date.now();
    const first = this.#fullSince === undefined;
    this.#fullSince ??= now;
    if (first || now - this.#lastReminder >= REMINDER_MS) {
      this.#lastReminder = now;
      const fields = { refusals: this.#refusals, fullForSeconds: Math.round((now - this.#fullSince) / 1000), restMs: this.pauseMs };
      void readRedisMemory(this.redis).then(
        (memory) => this.#report(first, { ...fields, ...memoryFields(memory) }),
        () => this.#report(first, fields),
      );
    }
    this.#rest();
    return true;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#resting);
    clearTimeout(this.#recovered);
  }

  #report(first: boolean, fields: Record<string, unknown>): void {
    if (first) {
      this.logger.error(fields, 'Redis is full and refuses writes: no job makes progress until maxmemory is raised or memory is freed; the workers rest and try again');
    } else {
      this.logger.error(fields, 'Redis is still full and refuses writes');
    }
  }

  #rest(): void {
    for (const worker of this.#workers) worker.pause(true).catch((error: unknown) => this.logger.warn({ err: error }, 'could not pause a worker'));
    this.#resting = setTimeout(() => {
      this.#resting = undefined;
      if (this.#closed) return;
      for (const worker of this.#workers) void worker.resume();
      // No refusal for a while after resuming: Redis takes writes again.
      this.#recovered = setTimeout(() => this.#recover(), this.pauseMs * 2);
      this.#recovered.unref();
    }, this.pauseMs);
    this.#resting.unref();
  }

  #recover(): void {
    if (this.#fullSince === undefined || this.#closed) return;
    this.logger.info({ refusals: this.#refusals, fullForSeconds: Math.round((Date.now() - this.#fullSince) / 1000) }, 'Redis accepts writes again');
    this.#fullSince = undefined;
    this.#refusals = 0;
  }
}

function memoryFields(memory: RedisMemory): Record<string, unknown> {
  return { usedBytes: memory.usedBytes, maxmemoryBytes: memory.maxBytes, maxmemoryPolicy: memory.policy };
}
