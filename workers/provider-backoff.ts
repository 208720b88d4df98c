import type { Worker } from 'bullmq';

import { ProviderUnavailableError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';

/** Embed steps failed in a row, with no success between, before this worker steps aside. */
export const FAILURES_BEFORE_BACKOFF = 3;
/** The first rest; each rest after it, with still no success, is twice as long, up to {@link MAX_BACKOFF_MS}. */
const FIRST_BACKOFF_MS = 5_000;
const MAX_BACKOFF_MS = 60_000;

/**
 * A worker that cannot reach DashScope (its own wrong `DASHSCOPE_BASE_URL`, a proxy or network of
 * its own) fails each embed step in a moment, so it takes far more of them than the healthy
 * workers, and spends the attempts every job has: measured, one batch landed on such a worker nine
 * times in a row, five short of failing its corpus job, and the job crawled at a thirtieth of its
 * rate. So once this process's embed steps fail as unavailable a few times in a row, with none
 * succeeding between, its embed worker takes no new step for a while (5 s, doubling with each rest
 * to a minute), and the other workers go on. In an outage every worker rests the same way: steps
 * still use their attempts, only more slowly, so a fleet whose every worker is wrong still fails
 * its jobs. A success ends a rest at once.
 */
export class ProviderBackoff {
  /** The embed workers (one per model's queue): all rest together, as they share the endpoint. */
  #workers: Worker[] = [];
  #failures = 0;
  /** Rests since the last success: each doubles the next. */
  #rests = 0;
  #resting: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(private readonly logger: Logger) {}

  watch(worker: Worker): void {
    this.#workers.push(worker);
  }

  /** An embed step's attempt failed. */
  failed(error: unknown): void {
    if (!(error instanceof ProviderUnavailableError)) return;
    this.#failures += 1;
    // Steps in flight when a rest began fail during it: they neither extend it nor count twice.
    if (this.#failures < FAILURES_BEFORE_BACKOFF || this.#resting || this.#closed || this.#workers.length === 0) return;
    // Counted per rest, not per failure: 32 steps in flight failing together once made the first rest a minute.
    const restMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** this.#rests);
    this.#rests += 1;
    // An HTTP status means DashScope (or a proxy before it) answered: pointing at this machine's
    // network, as for a refused connection, sent operators the wrong way in a provider outage.
    const status = error.failure.status;
    const what =
      status === undefined
        ? "check this machine's DASHSCOPE_BASE_URL and network"
        : `it was answered HTTP ${status}: if every worker says so, DashScope itself is failing; if only this one, check what stands between it and DashScope (DASHSCOPE_BASE_URL, a proxy)`;
    this.logger.warn(
      { code: error.code, status, failuresInARow: this.#failures, restMs, reason: error.message },
      `DashScope fails from this worker and nothing succeeded since: it takes no embed step for a while, and other workers go on; ${what}`,
    );
    for (const worker of this.#workers) worker.pause(true).catch((cause: unknown) => this.logger.warn({ err: cause }, 'could not pause an embed worker'));
    this.#resting = setTimeout(() => this.#endRest(), restMs);
    this.#resting.unref();
  }

  /** An embed step succeeded: DashScope answers this worker, and a rest under way ends. */
  succeeded(): void {
    if (this.#failures >= FAILURES_BEFORE_BACKOFF) this.logger.info({ failuresInARow: this.#failures }, 'DashScope answers this worker again');
    this.#failures = 0;
    this.#rests = 0;
    if (this.#resting) this.#endRest();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#resting);
  }

  #endRest(): void {
    clearTimeout(this.#resting);
    this.#resting = undefined;
    if (!this.#closed) for (const worker of this.#workers) worker.resume();
  }
}
