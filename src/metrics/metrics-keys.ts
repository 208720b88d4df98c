import type { WorkerPacing } from '../rate/fleet-pacing.js';

/**
 * Where worker metrics live in Redis (written by MetricsRecorder, read by the dashboard):
 *   <prefix>:metrics            HASH  `<name>\t<labels JSON>` → cumulative value
 *   <prefix>:metrics:job:<id>   HASH  requests, throttled → per corpus job (expires after 7 days)
 *   <prefix>:workers            ZSET  worker id → last heartbeat (ms)
 *   <prefix>:worker:<id>        STRING  heartbeat JSON, expires 20 s after the last flush
 */
export function metricsKeys(prefix: string) {
  return {
    counters: `${prefix}:metrics`,
    job: (id: string) => `${prefix}:metrics:job:${id}`,
    workers: `${prefix}:workers`,
    worker: (id: string) => `${prefix}:worker:${id}`,
  };
}

/** A heartbeat lives this long after the flush that sent it: a worker is live while it is fresh. */
export const HEARTBEAT_TTL_MS = 20_000;

export interface WorkerHeartbeat {
  /** `host:pid`. */
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  /** The settings it paces requests by; absent in the heartbeats of older versions. */
  pacing?: WorkerPacing;
  startedAt: number;
  lastSeen: number;
}

/** Labels sorted by name, so every process writes the same field for the same series. */
export function metricField(name: string, labels: Record<string, string>): string {
  const sorted = Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
  return `${name}\t${JSON.stringify(sorted)}`;
}

export function parseMetricField(field: string): { name: string; labels: Record<string, string> } {
  const tab = field.indexOf('\t');
  if (tab < 0) return { name: field, labels: {} };
  return { name: field.slice(0, tab), labels: JSON.parse(field.slice(tab + 1)) as Record<string, string> };
}
