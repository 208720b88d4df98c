import type { RedisClient } from '../redis/redis-client.js';

import { metricsKeys, parseMetricField } from './metrics-keys.js';

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
