import type { JobRecords } from '../jobs/job-record.js';
import type { Logger } from '../src/logger.js';

/** How often a worker process looks whether the jobs it has requests in flight for were stopped. */
const POLL_MS = 250;

/**
 * Aborts a worker process's in-flight work for corpus jobs that were cancelled, failed, lost, or
 * retried under a newer generation: one AbortSignal per unit of work reaches the rate gate and the
 * DashScope client, so `embedq cancel` stops requests (and their retry loops) within a poll, not
 * after the provider answers. One HMGET per watched job per poll; nothing when idle.
 */
export class StopWatch {
  readonly #watched = new Map<string, { generation: number; controllers: Set<AbortController> }>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly jobs: JobRecords,
    private readonly logger: Logger,
  ) {}

  /** A signal that aborts when the job leaves `generation` or stops running; call `done` after. */
  watch(corpusJobId: string, generation: number): { signal: AbortSignal; done: () => void } {
    const key = `${corpusJobId}#${generation}`;
    let entry = this.#watched.get(key);
    if (!entry) {
      entry = { generation, controllers: new Set() };
      this.#watched.set(key, entry);
    }
    const controller = new AbortController();
    entry.controllers.add(controller);
    this.#timer ??= setInterval(() => void this.#poll(), POLL_MS);
    this.#timer.unref();
    const watched = entry;
    return {
      signal: controller.signal,
      done: () => {
        watched.controllers.delete(controller);
        if (watched.controllers.size === 0 && this.#watched.get(key) === watched) this.#watched.delete(key);
        if (this.#watched.size === 0 && this.#timer) {
          clearInterval(this.#timer);
          this.#timer = undefined;
        }
      },
    };
  }

  async #poll(): Promise<void> {
    for (const [key, entry] of [...this.#watched]) {
      const corpusJobId = key.slice(0, key.lastIndexOf('#'));
      let now;
      try {
        now = await this.jobs.stateAndGeneration(corpusJobId);
      } catch {
        return; // Redis unreachable: the requests go on; their results are fenced when stored.
      }
      const active = now !== undefined && (now.state === 'queued' || now.state === 'running') && now.generation === entry.generation;
      if (active) continue;
      this.logger.info({ corpusJobId, state: now?.state ?? 'lost', requests: entry.controllers.size }, 'job stopped; aborting its requests');
      for (const controller of entry.controllers) controller.abort(new JobStoppedError(corpusJobId));
      this.#watched.delete(key);
      if (now === undefined) {
        // Its record is gone (JOB_LOST): nothing can resume it, and its buffers would stay in Redis.
        this.jobs.forgetLost(corpusJobId).then(
          (forgotten) => forgotten && this.logger.warn({ corpusJobId }, "job's record lost from Redis: its other keys removed"),
          (error: unknown) => this.logger.debug({ err: error, corpusJobId }, "could not remove the keys of a job whose record is lost; the prune removes them later"),
        );
      }
    }
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** The reason a stopped job's work is aborted with; processors return quietly on it. */
export class JobStoppedError extends Error {
  constructor(readonly corpusJobId: string) {
    super(`corpus job ${corpusJobId} stopped`);
    this.name = 'JobStoppedError';
  }
}
