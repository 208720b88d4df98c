import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';

import { METRICS } from '../../src/metrics/metric-names.js';
import { MetricsRecorder } from '../../src/metrics/metrics-recorder.js';
import { liveWorkers, readJobRequestStats, readWorkerMetrics } from '../../src/metrics/read-metrics.js';

describe('worker metrics through Redis', () => {
  let redis: Redis;
  const prefix = `m${randomBytes(4).toString('hex')}`;
  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
  });
  afterAll(() => redis.quit());

  const value = async (name: string, labels: Record<string, string> = {}): Promise<number | undefined> =>
    (await readWorkerMetrics(redis, prefix)).find((sample) => sample.name === name && JSON.stringify(sample.labels) === JSON.stringify(labels))?.value;

  it("adds up several processes' deltas, histograms included, and keeps counting across flushes", async () => {
    const first = new MetricsRecorder(redis, prefix);
    const second = new MetricsRecorder(redis, prefix);
    first.batchStored({ embedded: 10, tokens: 120 });
    second.batchStored({ embedded: 7, tokens: 80 });
    first.observe(METRICS.requestDuration, 0.15);
    second.observe(METRICS.requestDuration, 3);
    await Promise.all([first.flush(), second.flush()]);
    expect(await value(METRICS.lines.name, { outcome: 'embedded' })).toBe(17);
    expect(await value(METRICS.tokens.name)).toBe(200);
    expect(await value(`${METRICS.requestDuration.name}_bucket`, { le: '0.1' })).toBeUndefined();
    expect(await value(`${METRICS.requestDuration.name}_bucket`, { le: '0.2' })).toBe(1);
    expect(await value(`${METRICS.requestDuration.name}_bucket`, { le: '5' })).toBe(2);
    expect(await value(`${METRICS.requestDuration.name}_bucket`, { le: '+Inf' })).toBe(2);
    expect(await value(`${METRICS.requestDuration.name}_sum`)).toBeCloseTo(3.15, 10);
    // A flush sends deltas: nothing new, nothing added.
    await first.flush();
    expect(await value(METRICS.tokens.name)).toBe(200);
    first.shardWritten({ seconds: 1.5, blank: 3, failed: 2 });
    await first.flush();
    expect(await value(METRICS.lines.name, { outcome: 'blank' })).toBe(3);
    expect(await value(METRICS.lines.name, { outcome: 'failed' })).toBe(2);
    expect(await value(`${METRICS.shardWriteDuration.name}_count`)).toBe(1);
  });

  it('counts requests per corpus job, and nothing for a request of no job', async () => {
    const recorder = new MetricsRecorder(redis, prefix);
    recorder.incrementJob(undefined, 'requests'); // no job: dropped
    recorder.incrementJob('cj-a', 'requests');
    recorder.incrementJob('cj-b', 'requests');
    recorder.incrementJob('cj-a', 'requests');
    recorder.incrementJob('cj-a', 'throttled');
    await recorder.flush();
    const stats = await readJobRequestStats(redis, prefix, ['cj-a', 'cj-b', 'cj-none']);
    expect(Object.fromEntries(stats)).toEqual({
      'cj-a': { requests: 2, throttled: 1 },
      'cj-b': { requests: 1, throttled: 0 },
      'cj-none': { requests: 0, throttled: 0 },
    });
    expect(await redis.ttl(`${prefix}:metrics:job:cj-a`)).toBeGreaterThan(6 * 86_400);
  });

  it('lists a started worker as live and drops it when it stops', async () => {
    const recorder = new MetricsRecorder(redis, prefix, { flushIntervalMs: 60_000 });
    recorder.start({ concurrency: 12 });
    await expect.poll(async () => (await liveWorkers(redis, prefix)).length, { timeout: 5_000 }).toBe(1);
    expect((await liveWorkers(redis, prefix))[0]).toMatchObject({ pid: process.pid, concurrency: 12 });
    await recorder.stop();
    expect(await liveWorkers(redis, prefix)).toEqual([]);
  });
});
