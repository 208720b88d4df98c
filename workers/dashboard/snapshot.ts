import { EMBED_QUEUE_NAMES, LEGACY_EMBED_QUEUE, QUEUE_NAMES, type QueueName } from '../../jobs/queues.js';
import { BACKLOG_STATES, QUEUE_DEPTH_STATES } from '../../src/metrics/metric-names.js';
import { liveWorkers, readJobRequestStats, type WorkerView } from '../../src/metrics/read-metrics.js';
import { pacingDisagreement } from '../../src/rate/fleet-pacing.js';
import { isRedisUnreachableError } from '../../src/redis/redis-client.js';
import { RedisAnswerWatch, RedisNotAnsweringError, isRedisOutage } from '../../src/redis/redis-deadline.js';
import { readRedisMemory, redisMemoryProblem } from '../../src/redis/redis-memory.js';
import { orphanedStepsByJob } from '../orphaned-steps.js';
import type { Services } from '../services.js';
import { FirstErrors, toJobView, type JobView } from './job-views.js';
import type { RateFigures, RateSource, ScheduleSource, ScheduleView } from './sources.js';
import { ThroughputTracker } from './throughput.js';

/**
 * The queues whose depths are read: this version's, and the legacy `embed` queue, where an older
 * worker stopped in a rolling upgrade hands its embed steps back (this version's workers take them).
 */
export const DEPTH_QUEUES = [...QUEUE_NAMES, LEGACY_EMBED_QUEUE] as const;
type DepthQueue = QueueName | typeof LEGACY_EMBED_QUEUE;
export type QueueDepth = Record<(typeof QUEUE_DEPTH_STATES)[number], number>;
export type QueueDepths = Record<DepthQueue, QueueDepth>;

/** Everything the page shows, as one JSON document (sent over SSE each tick). */
export interface Snapshot {
  at: number;
  jobs: JobView[];
  queues: QueueDepths;
  rates: RateFigures[];
  workers: WorkerView[];
  schedules: ScheduleView[];
  /** What the operator must fix in Redis (full, nearly full, an evicting policy), or null. */
  redisProblem: string | null;
  /** The settings the live workers disagree on (they pace by different quotas), or null. */
  fleetProblem: string | null;
}

export interface DashboardSources {
  rates: RateSource;
  schedules: ScheduleSource;
}

export async function readQueueDepths(services: Pick<Services, 'queues'>): Promise<QueueDepths> {
  const entries = await Promise.all(
    DEPTH_QUEUES.map(async (name) => {
      const counts = await services.queues[name].getJobCounts(...QUEUE_DEPTH_STATES);
      return [name, Object.fromEntries(QUEUE_DEPTH_STATES.map((state) => [state, counts[state] ?? 0]))] as const;
    }),
  );
  return Object.fromEntries(entries) as QueueDepths;
}

/** A queue's jobs not yet started. */
export function backlogOf(depth: QueueDepth): number {
  return BACKLOG_STATES.reduce((sum, state) => sum + depth[state], 0);
}

/**
 * Every embed queue together (each model's, and the legacy one), each state summed: its backlog is
 * what KEDA scales workers on. Steps handed back to the legacy queue were not counted, so a backlog
 * only there scaled no worker up to take it.
 */
export function embedDepth(depths: QueueDepths): QueueDepth {
  const embedQueues: DepthQueue[] = [...EMBED_QUEUE_NAMES, LEGACY_EMBED_QUEUE];
  return Object.fromEntries(QUEUE_DEPTH_STATES.map((state) => [state, embedQueues.reduce((sum, name) => sum + depths[name][state], 0)])) as QueueDepth;
}

function emptySnapshot(): Snapshot {
  const depths = Object.fromEntries(QUEUE_DEPTH_STATES.map((state) => [state, 0]));
  return { at: 0, jobs: [], queues: Object.fromEntries(DEPTH_QUEUES.map((name) => [name, { ...depths }])) as QueueDepths, rates: [], workers: [], schedules: [], redisProblem: null, fleetProblem: null };
}

/**
 * Reads the same Redis state the CLI reads (CorpusStore, queue getters, the metrics hash), once per
 * tick for every viewer, and keeps per-job throughput samples between ticks. It writes nothing.
 */
export class DashboardState {
  private readonly throughput = new ThroughputTracker();
  private readonly firstErrors;
  private current: Snapshot | undefined;
  private readonly listeners = new Set<(snapshot: Snapshot) => void>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<Snapshot> | undefined;
  /** When a refresh first found Redis unreachable, until one succeeds again. */
  private unreachableSince: number | undefined;
  /** The deadline of every Redis read the dashboard answers with (its API, /metrics, Bull Board's API). */
  readonly deadline = new RedisAnswerWatch();

  constructor(
    private readonly services: Services,
    private readonly sources: DashboardSources,
    private readonly options: { intervalMs: number; jobLimit: number } = { intervalMs: 1_000, jobLimit: 50 },
  ) {
    this.firstErrors = new FirstErrors(services);
  }

  start(): void {
    const tick = (): void => {
      this.fresh()
        .then(() => (this.unreachableSince = undefined))
        .catch((error: unknown) => {
          if (!isRedisOutage(error)) return this.services.logger.warn({ err: error }, 'dashboard refresh failed');
          if (isRedisUnreachableError(error)) this.services.redisOutage.note(error);
          this.unreachableSince ??= Date.now();
          this.publishUnreachable(error instanceof RedisNotAnsweringError ? 'not answering' : 'unreachable');
        })
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  /**
   * While Redis is down the page keeps the last figures, marked as such: it showed them as live,
   * with no word of Redis, only its "updated" time standing still.
   */
  private publishUnreachable(how: 'unreachable' | 'not answering'): void {
    const since = new Date(this.unreachableSince!).toISOString();
    const figures = this.current ? `; the figures below are from ${new Date(this.current.at).toISOString()}` : '';
    const stale: Snapshot = { ...(this.current ?? emptySnapshot()), redisProblem: `${how} since ${since}${figures}` };
    for (const listener of this.listeners) listener(stale);
  }

  subscribe(listener: (snapshot: Snapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The latest snapshot, reading one if none was taken yet. */
  async latest(): Promise<Snapshot> {
    return this.current ?? this.refresh();
  }

  refresh(): Promise<Snapshot> {
    this.running ??= this.read().finally(() => (this.running = undefined));
    return this.running;
  }

  /** A new snapshot, or a RedisNotAnsweringError when Redis takes longer than REDIS_ANSWER_MS. */
  fresh(): Promise<Snapshot> {
    return this.deadline.within(this.refresh());
  }

  /**
   * One job as the page shows it: from the snapshot, or, for a job older than the page's list,
   * read now in the same shape (it was the stored record, whose fields differ).
   */
  async view(id: string): Promise<JobView | undefined> {
    const listed = (await this.fresh()).jobs.find((view) => view.id === id);
    if (listed) return listed;
    return this.deadline.within(
      (async () => {
        const record = await this.services.corpora.get(id);
        if (!record) return undefined;
        const [requests, errors] = await Promise.all([
          readJobRequestStats(this.services.redis, this.services.settings.redisPrefix, [id]),
          this.firstErrors.read(record).catch(() => []),
        ]);
        return toJobView(record, requests.get(id) ?? { requests: 0, throttled: 0 }, this.throughput, errors);
      })(),
    );
  }

  private async read(): Promise<Snapshot> {
    const { services } = this;
    // The newest jobs, and every older one still queued or running: those are what an operator watches.
    const records = await services.corpora.jobs.listWithActive(this.options.jobLimit);
    const now = Date.now();
    const ids = new Set(records.map((record) => record.id));
    for (const record of records) this.throughput.record(record.id, record.rowsEmbedded + record.rowsFailed + record.rowsBlank, now);
    this.throughput.keepOnly(ids);
    this.firstErrors.keepOnly(ids);
    const anyRunning = records.some((record) => record.state === 'running');
    const [requests, queues, rates, workers, schedules, errors, memory, stalled] = await Promise.all([
      readJobRequestStats(services.redis, services.settings.redisPrefix, [...ids]),
      readQueueDepths(services),
      this.sources.rates.read(),
      liveWorkers(services.redis, services.settings.redisPrefix),
      this.sources.schedules.list(),
      Promise.all(records.map((record) => this.firstErrors.of(record))),
      readRedisMemory(services.redis),
      anyRunning ? orphanedStepsByJob(services) : new Map<string, number>(),
    ]);
    const jobs = records.map((record, index) =>
      toJobView(record, requests.get(record.id) ?? { requests: 0, throttled: 0 }, this.throughput, errors[index] ?? [], now, stalled.get(record.id)),
    );
    this.current = {
      at: now,
      jobs,
      queues,
      rates,
      workers,
      schedules,
      redisProblem: redisMemoryProblem(memory) ?? null,
      fleetProblem: pacingDisagreement(workers) ?? null,
    };
    for (const listener of this.listeners) listener(this.current);
    return this.current;
  }
}
