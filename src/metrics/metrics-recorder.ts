import { hostname } from 'node:os';

import { processIdentity } from '../process-identity.js';
import { defineLuaScript, type LuaScript } from '../redis/lua-script.js';
import type { RedisClient } from '../redis/redis-client.js';

import { METRICS, type MetricDefinition } from './metric-names.js';
import { HEARTBEAT_TTL_MS, metricField, metricsKeys, type WorkerHeartbeat } from './metrics-keys.js';

/**
 * Worker-side metrics. Many worker processes on many machines must reach one scrape target, and
 * KEDA adds and removes worker pods all the time, so a process's own `/metrics` would lose what a
 * short-lived pod counted and need service discovery. Instead each process adds to counters and
 * histogram buckets in memory and flushes the deltas to one Redis hash every few seconds (one
 * pipelined round, HINCRBYFLOAT, so concurrent flushes add up); the dashboard's `/metrics` reads
 * that hash. The counters survive worker restarts and Redis restarts (AOF), as Prometheus expects.
 * The same round refreshes this process's heartbeat (the dashboard's live-workers list).
 */
export interface RecorderOptions {
  /** How often deltas go to Redis (Default: 5,000 ms). */
  flushIntervalMs?: number;
  /** How long per-job request counts stay after the last flush (Default: 7 days). */
  jobStatsTtlSeconds?: number;
}

/** A worker missing this long leaves `<prefix>:workers` (its heartbeat key expired long before). */
const FORGET_WORKER_MS = 3_600_000;

/**
 * A heartbeat, scored by Redis's clock, and the pruning of workers long gone by the same clock.
 * Before, both used the worker's own clock: one an hour ahead pruned every other worker from the
 * set, and the dashboard, `embedq_workers` and the fleet-settings check saw only it.
 * KEYS: workers ZSET, worker:<id>. ARGV: id, heartbeat JSON, heartbeat TTL (ms), forget after (ms).
 */
const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[4]))
return now
`;

/** A histogram's field names, built once per metric: `observe` runs for every request. */
const histogramFieldCache = new WeakMap<MetricDefinition, { buckets: string[]; infinity: string; sum: string; count: string }>();
function histogramFields(metric: MetricDefinition): { buckets: string[]; infinity: string; sum: string; count: string } {
  let fields = histogramFieldCache.get(metric);
  if (!fields) {
    fields = {
      buckets: (metric.buckets ?? []).map((bound) => metricField(`${metric.name}_bucket`, { le: String(bound) })),
      infinity: metricField(`${metric.name}_bucket`, { le: '+Inf' }),
      sum: metricField(`${metric.name}_sum`, {}),
      count: metricField(`${metric.name}_count`, {}),
    };
    histogramFieldCache.set(metric, fields);
  }
  return fields;
}

export class MetricsRecorder {
  private readonly keys;
  private pending = new Map<string, number>();
  private pendingJobs = new Map<string, Map<string, number>>();
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: WorkerHeartbeat | undefined;
  private readonly options: Required<RecorderOptions>;
  private readonly beat: LuaScript;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    options: RecorderOptions = {},
  ) {
    this.keys = metricsKeys(prefix);
    this.beat = defineLuaScript(redis, HEARTBEAT);
    this.options = { flushIntervalMs: 5_000, jobStatsTtlSeconds: 7 * 86_400, ...options };
  }

  /** Starts the periodic flush and the heartbeat (worker processes only; commands never call it). */
  start(info: Pick<WorkerHeartbeat, 'concurrency' | 'pacing'>): void {
    if (this.timer) return;
    this.heartbeat = { id: processIdentity(), host: hostname(), pid: process.pid, startedAt: Date.now(), lastSeen: 0, ...info };
    // One flush at a time: while Redis is away a flush waits for the reconnect, and the deltas of
    // the ticks in between simply accumulate for the next one.
    let flushing = false;
    this.timer = setInterval(() => {
      if (flushing) return;
      flushing = true;
      this.flush()
        .catch(() => undefined)
        .finally(() => (flushing = false));
    }, this.options.flushIntervalMs);
    this.timer.unref();
    void this.flush().catch(() => undefined);
  }

  /** Stops the timer and sends what is left; the heartbeat is removed so the worker leaves the list at once. */
  async stop(): Promise<void> {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush({ leaving: true }).catch(() => undefined);
  }

  increment(metric: MetricDefinition, labels: Record<string, string> = {}, value = 1): void {
    this.add(metricField(metric.name, labels), value);
  }

  observe(metric: MetricDefinition, seconds: number): void {
    const fields = histogramFields(metric);
    const buckets = metric.buckets ?? [];
    for (let index = 0; index < buckets.length; index += 1) if (seconds <= buckets[index]!) this.add(fields.buckets[index]!, 1);
    this.add(fields.infinity, 1);
    this.add(fields.sum, seconds);
    this.add(fields.count, 1);
  }

  /**
   * Adds to a per-corpus-job counter (requests, throttled); a call for no job (undefined) counts
   * nothing. The id is passed, not kept in an AsyncLocalStorage: on Node 20 that turns on
   * promise hooks for the whole process, a cost on every promise of every request.
   */
  incrementJob(id: string | undefined, field: string, value = 1): void {
    if (id === undefined) return;
    let fields = this.pendingJobs.get(id);
    if (!fields) this.pendingJobs.set(id, (fields = new Map()));
    fields.set(field, (fields.get(field) ?? 0) + value);
  }

  /** embed-batch: a batch was stored in its shard's buffer. */
  batchStored(counts: { embedded: number; tokens: number }): void {
    this.increment(METRICS.lines, { outcome: 'embedded' }, counts.embedded);
    this.increment(METRICS.tokens, {}, counts.tokens);
  }

  /** write-shard: a shard file was written; its blank and failed lines are final now. */
  shardWritten(shard: { seconds: number; blank: number; failed: number }): void {
    this.observe(METRICS.shardWriteDuration, shard.seconds);
    this.increment(METRICS.lines, { outcome: 'blank' }, shard.blank);
    this.increment(METRICS.lines, { outcome: 'failed' }, shard.failed);
  }

  /** Sends the deltas in one pipelined round; on failure they are kept for the next round. */
  async flush(options: { leaving?: boolean } = {}): Promise<void> {
    const counters = this.pending;
    const jobs = this.pendingJobs;
    this.pending = new Map();
    this.pendingJobs = new Map();
    const pipeline = this.redis.pipeline();
    for (const [field, value] of counters) pipeline.hincrbyfloat(this.keys.counters, field, value);
    for (const [id, fields] of jobs) {
      for (const [field, value] of fields) pipeline.hincrbyfloat(this.keys.job(id), field, value);
      pipeline.expire(this.keys.job(id), this.options.jobStatsTtlSeconds);
    }
    if (this.heartbeat && options.leaving) pipeline.zrem(this.keys.workers, this.heartbeat.id).del(this.keys.worker(this.heartbeat.id));
    try {
      const results = await pipeline.exec();
      const failed = results?.find(([error]) => error);
      if (failed) throw failed[0];
    } catch (error) {
      for (const [field, value] of counters) this.add(field, value);
      for (const [id, fields] of jobs) for (const [field, value] of fields) this.incrementJob(id, field, value);
      throw error;
    }
    if (this.heartbeat && !options.leaving) {
      // `lastSeen` is for people reading the JSON; liveness and age come from the set's score.
      const beat = { ...this.heartbeat, lastSeen: Date.now() };
      await this.beat([this.keys.workers, this.keys.worker(beat.id)], beat.id, JSON.stringify(beat), HEARTBEAT_TTL_MS, FORGET_WORKER_MS);
    }
  }

  private add(field: string, value: number): void {
    if (value === 0) return;
    this.pending.set(field, (this.pending.get(field) ?? 0) + value);
  }
}
