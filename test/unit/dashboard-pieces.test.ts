import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';

import { metricField, parseMetricField } from '../../src/metrics/metrics-keys.js';
import { isLoopbackHost } from '../../workers/dashboard/auth.js';
import { mergeFamilies } from '../../workers/dashboard/metrics-endpoint.js';
import { ThroughputTracker } from '../../workers/dashboard/throughput.js';

describe('throughput tracker', () => {
  it('reports lines per second over the last few seconds, and a smoothed history', () => {
    const tracker = new ThroughputTracker();
    for (let second = 0; second <= 10; second += 1) tracker.record('a', second * 100, 1_000_000 + second * 1000);
    expect(tracker.now('a', 1_010_000)).toBe(100);
    expect(tracker.history('a').every(([, rate]) => rate === 100)).toBe(true);
    // A burst (a shard's blank lines counted at once) is spread over the window, not a spike.
    tracker.record('a', 1_000 + 500, 1_011_000);
    // (1,500 − 600 lines) over the 5 s window: 180 lines/s, where the raw 1 s delta would be 500.
    expect(tracker.history('a').at(-1)![1]).toBe(180);
    // Stale samples say nothing about now.
    expect(tracker.now('a', 1_100_000)).toBe(0);
    tracker.keepOnly(new Set());
    expect(tracker.history('a')).toEqual([]);
  });

  it('reads a count that went down (a retry rebuilds it from the written shards) as a pause, never as negative lines a second', () => {
    const tracker = new ThroughputTracker();
    for (let second = 0; second <= 5; second += 1) tracker.record('a', second * 100, 1_000_000 + second * 1000);
    // Retried: 300 lines of open shards are to be embedded again.
    tracker.record('a', 200, 1_006_000);
    for (let second = 7; second <= 12; second += 1) tracker.record('a', 200 + (second - 6) * 50, 1_000_000 + second * 1000);
    expect(tracker.history('a').every(([, rate]) => rate >= 0)).toBe(true);
    expect(tracker.now('a', 1_012_000)).toBe(50);
  });
});

describe('metrics plumbing', () => {
  it('writes the same field for the same series whatever the label order', () => {
    expect(metricField('m', { b: '2', a: '1' })).toBe(metricField('m', { a: '1', b: '2' }));
    expect(parseMetricField(metricField('m', { a: 'x"y' }))).toEqual({ name: 'm', labels: { a: 'x"y' } });
  });

  it("regroups BullMQ's per-queue exports into one block per family that a strict parser reads", () => {
    const queue = (name: string, count: number) =>
      `# HELP bullmq_job_count Number of jobs\n# TYPE bullmq_job_count gauge\nbullmq_job_count{queue="${name}", state="waiting"} ${count}\n# HELP bullmq_job_completed_total Done\n# TYPE bullmq_job_completed_total counter\nbullmq_job_completed_total{queue="${name}"} 0`;
    const merged = mergeFamilies([queue('split', 1), queue('embed', 7)]);
    expect(merged.match(/# HELP bullmq_job_count/g)).toHaveLength(1);
    const families = parsePrometheusTextFormat(merged) as Array<{ name: string; metrics: Array<{ value: string; labels: Record<string, string> }> }>;
    expect(families.map((family) => family.name)).toEqual(['bullmq_job_count', 'bullmq_job_completed_total']);
    expect(families[0]!.metrics).toEqual([
      { value: '1', labels: { queue: 'split', state: 'waiting' } },
      { value: '7', labels: { queue: 'embed', state: 'waiting' } },
    ]);
  });
});

describe('dashboard host check', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['::1', true],
    ['0.0.0.0', false],
    ['10.0.0.5', false],
    ['::', false],
    ['dashboard.example.com', false],
  ])('%s loopback: %s', (host, loopback) => expect(isLoopbackHost(host)).toBe(loopback));
});
