import type { Logger } from '../logger.js';
import { isRedisAuthError, isRedisConnectionError, type RedisClient } from './redis-client.js';
import { RedisNotAnsweringError } from './redis-deadline.js';

/** While Redis stays unreachable, a reminder at most this often. */
export const OUTAGE_REMINDER_MS = 30_000;

/**
 * A connection ready this long with no connection error since ends an outage. A connection that
 * finished its handshake as Redis went down reported ready a millisecond after another's reset,
 * and the outage was logged as over and begun again (two REDIS_UNAVAILABLE lines for one).
 */
const BACK_AFTER_MS = 250;

/**
 * Says once that Redis is lost. Each connection of a process (its queues', each worker's) reports
 * every failed reconnection attempt as an error, and each was logged with its stack: measured, 9
 * lines a second from one worker process, 1,260 lines (460 KB) in a 139 s outage, and 705 from the
 * dashboard. Here the first is one REDIS_UNAVAILABLE line without a stack, then a reminder every
 * 30 s while it lasts, and one line when a connection is ready again. Credentials Redis refuses
 * while the process runs (a password rotated under it) are such an outage too: each reconnection's
 * WRONGPASS came with its stack, 27 lines a second from one worker. Other errors are not taken.
 */
export class RedisOutageLog {
  #since: number | undefined;
  /** Whether this outage's refused credentials were said (one that began as a reset may turn into them). */
  #refusalSaid = false;
  #lastReport = 0;
  #errors = 0;
  #backCheck: NodeJS.Timeout | undefined;

  /** `redis`: describeRedisTarget's name of it, password masked. */
  constructor(
    private readonly logger: Logger,
    private readonly redis: string,
    private readonly reminderMs = OUTAGE_REMINDER_MS,
  ) {}

  /** A connection of this process: its being ready again ends an outage. */
  watch(client: RedisClient): void {
    client.on('ready', () => this.#ready());
  }

  /**
   * Any error of a Redis connection, or a RedisNotAnsweringError of the liveness check
   * (redis-liveness.ts). True when it says Redis is unreachable (then it is logged here, in summary).
   */
  note(error: unknown): boolean {
    const refused = isRedisAuthError(error);
    if (!refused && !isRedisConnectionError(error) && !(error instanceof RedisNotAnsweringError)) return false;
    this.#errors += 1;
    const now = Date.now();
    const reason = (error as Error).message;
    if (this.#since === undefined || (refused && !this.#refusalSaid)) {
      this.#since ??= now;
      this.#lastReport = now;
      this.#refusalSaid = refused;
      const message = refused ? 'Redis refused the credentials (rotated? check the password in the setting named); waiting for it to take them' : 'lost Redis; waiting for it to come back';
      this.logger.error({ code: 'REDIS_UNAVAILABLE', redis: this.redis, reason }, message);
    } else if (now - this.#lastReport >= this.reminderMs) {
      this.#lastReport = now;
      this.logger.error({ code: 'REDIS_UNAVAILABLE', redis: this.redis, reason, errors: this.#errors, downForSeconds: this.#downForSeconds(now) }, refused ? 'Redis still refuses the credentials' : 'Redis is still unreachable');
    }
    return true;
  }

  /**
   * A check or sweep Redis did not answer: an outage (or refused credentials) is said here, once;
   * any other failure is `logger`'s warning `message`, with its stack.
   */
  warnUnlessOutage(logger: Logger, error: unknown, message: string): void {
    if (!this.note(error)) logger.warn({ err: error }, message);
  }

  /**
   * Redis answered a command. Ends an outage as a connection's being ready again does: a Redis
   * that stopped answering without dropping a connection never makes one ready again.
   */
  answered(): void {
    this.#ready();
  }

  #ready(): void {
    if (this.#since === undefined || this.#backCheck) return;
    // Counted, not timed: the reset and the ready came in the same millisecond.
    const errorsWhenReady = this.#errors;
    this.#backCheck = setTimeout(() => {
      this.#backCheck = undefined;
      if (this.#errors === errorsWhenReady) this.#back();
    }, BACK_AFTER_MS);
    this.#backCheck.unref();
  }

  #back(): void {
    if (this.#since === undefined) return;
    this.logger.info({ redis: this.redis, errors: this.#errors, downForSeconds: this.#downForSeconds(Date.now()) }, 'Redis is reachable again');
    this.#since = undefined;
    this.#refusalSaid = false;
    this.#errors = 0;
  }

  #downForSeconds(now: number): number {
    return Math.round((now - this.#since!) / 1000);
  }
}
