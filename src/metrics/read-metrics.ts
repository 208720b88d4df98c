import type { RedisClient } from '../redis/redis-client.js';
import { redisNow } from '../redis/redis-clock.js';

import { HEARTBEAT_TTL_MS, metricsKeys, parseMetricField, type WorkerHeartbeat } from './metrics-keys.js';

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every series the workers flushed, as cumulative samples. */
export async function readWorkerMetrics(redis: RedisClient, prefix: string): Promise<MetricSample[]> {
  const hash = await redis.hgetall(metricsKeys(prefix).counters);
  return Object.entries(hash).map(([field, value]) => ({ ...parseMetricField(field), value: Number(value) }));
}

export interface JobRequestStats {
  requests: number;
  throttled: number;
}

/** Requests and 429s per corpus job, in one pipelined round. */
export async function readJobRequestStats(redis: RedisClient, prefix: string, ids: readonly string[]): Promise<Map<string, JobRequestStats>> {
  const keys = metricsKeys(prefix);
  const pipeline = redis.pipeline();
  for (const id of ids) pipeline.hmget(keys.job(id), 'requests', 'throttled');
  const results = ids.length > 0 ? ((await pipeline.exec()) ?? []) : [];
  return new Map(
    ids.map((id, index) => {
      const [requests, throttled] = (results[index]?.[1] as Array<string | null> | undefined) ?? [];
      return [id, { requests: Number(requests ?? 0), throttled: Number(throttled ?? 0) }];
    }),
  );
}

export interface WorkerView extends WorkerHeartbeat {
  /** Seconds since the last heartbeat. */
  ageSeconds: number;
}

/**
 * Worker processes whose heartbeat (sent with each metrics flush) is still fresh, by Redis's clock,
 * which scores the heartbeats (MetricsRecorder): the reader's clock and the workers' may be off.
 */
export async function liveWorkers(redis: RedisClient, prefix: string): Promise<WorkerView[]> {
  const keys = metricsKeys(prefix);
  const now = await redisNow(redis);
  const scored = await redis.zrangebyscore(keys.workers, now - HEARTBEAT_TTL_MS, '+inf', 'WITHSCORES');
  if (scored.length === 0) return [];
  const seenAt = new Map<string, number>();
  for (let i = 0; i < scored.length; i += 2) seenAt.set(scored[i]!, Number(scored[i + 1]));
  const ids = [...seenAt.keys()];
  const beats = await redis.mget(ids.map((id) => keys.worker(id)));
  return beats
    .filter((beat): beat is string => beat !== null)
    .map((beat) => JSON.parse(beat) as WorkerHeartbeat)
    .map((beat) => {
      const lastSeen = seenAt.get(beat.id) ?? beat.lastSeen;
      return { ...beat, lastSeen, ageSeconds: Math.max(0, Math.round((now - lastSeen) / 1000)) };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
}
