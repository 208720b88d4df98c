import { PassThrough } from 'node:stream';

import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';

import { metricField, parseMetricField } from '../../src/metrics/metrics-keys.js';
import { isLoopbackHost, loginRedirectPath } from '../../workers/dashboard/auth.js';
import { mergeFamilies } from '../../workers/dashboard/metrics-endpoint.js';
import { snapshotStream } from '../../workers/dashboard/event-stream.js';
import { progressLine } from '../../workers/commands/progress.js';
import { ThroughputTracker } from '../../workers/dashboard/throughput.js';
import { toJobView } from '../../workers/dashboard/job-views.js';
import { rateFigures } from '../../workers/dashboard/sources.js';
import type { CorpusJobRecord } from '../../jobs/corpus-store.js';
import { parseJobOptions } from '../../src/job-options.js';

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

  it('shows a job that stopped as a drop to 0 when it stopped, not a slide down across the time since', () => {
    const tracker = new ThroughputTracker();
    const stopped = 1_010_000;
    for (let t = 1_000_000; t <= stopped; t += 1000) tracker.record('a', (t - 1_000_000) * 0.99, t);
    // Finished (or stalled) for two minutes: each tick records the same count.
    for (let t = stopped + 1000; t <= stopped + 116_000; t += 1000) tracker.record('a', 9_900, t);
    const after = tracker.history('a').filter(([t]) => t > stopped);
    // The rate is 0 once the 5 s window holds no progress, and stays there.
    expect(after.filter(([t]) => t >= stopped + 5_000)).toEqual([
      [stopped + 5_000, 0],
      [stopped + 116_000, 0],
    ]);
    // Moving again: 990 lines in its first second are 198 lines/s over the 5 s window, not 990 lines
    // over the two minutes before (8 lines/s).
    tracker.record('a', 10_890, stopped + 117_000);
    expect(tracker.history('a').slice(-3)).toEqual([
      [stopped + 5_000, 0],
      [stopped + 116_000, 0],
      [stopped + 117_000, 198],
    ]);
    // So does the rate now (it read the first second alone: 990 lines/s).
    expect(tracker.now('a', stopped + 117_000)).toBe(198);
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

describe('job and gate figures', () => {
  const record = (fields: Partial<CorpusJobRecord>): CorpusJobRecord =>
    ({ id: 'cj-x', state: 'running', finishing: false, options: parseJobOptions({ input: 's3://b/in/', output: 's3://b/out/' }), schedule: null, totalLines: 2_000, linesRead: 2_000, rowsEmbedded: 0, rowsFailed: 0, rowsBlank: 0, tokens: 0, shardsWritten: 0, totalShards: 2, createdAt: 0, startedAt: 0, resumedAt: null, activeMs: 0, linesRedone: 0, generation: 0, finishedAt: null, error: null, errorCode: null, lastRetry: null, lastRetryAt: null, ...fields }) as CorpusJobRecord;

  it('gives no ETA for a running job that stopped moving (it made one up from the average, growing every second)', () => {
    const tracker = new ThroughputTracker();
    for (let second = 0; second <= 8; second += 1) tracker.record('cj-x', 680, 1_000_000 + second * 1000);
    const stalled = toJobView(record({ rowsEmbedded: 680, startedAt: 990_000 }), { requests: 0, throttled: 0 }, tracker, [], 1_008_000);
    expect(stalled).toMatchObject({ throughputNow: 0, etaSeconds: null });
    for (let second = 9; second <= 12; second += 1) tracker.record('cj-x', 680 + (second - 8) * 100, 1_000_000 + second * 1000);
    // Moving again for 4 s at 100 lines/s: 400 lines over the 5 s window, 80 lines/s, and 920 lines to go.
    expect(toJobView(record({ rowsEmbedded: 1_080, startedAt: 990_000 }), { requests: 0, throttled: 0 }, tracker, [], 1_012_000).etaSeconds).toBeCloseTo(11.5, 1);
  });

  it("averages a retried job's lines over the time it ran, not the time it stood stopped", () => {
    const now = 10_000_000;
    const view = (fields: Partial<CorpusJobRecord>): number => toJobView(record({ rowsEmbedded: 700, ...fields }), { requests: 0, throttled: 0 }, new ThroughputTracker(), [], now).throughputAverage;
    // Ran 60 s, stopped for most of an hour, running again for 10 s: 700 lines in 70 s.
    const retried = { generation: 1, startedAt: now - 3_600_000, activeMs: 60_000 };
    expect(view({ ...retried, resumedAt: now - 10_000 })).toBeCloseTo(10, 6);
    expect(view({ ...retried, state: 'queued', resumedAt: null })).toBeCloseTo(700 / 60, 6);
    expect(view({ ...retried, state: 'completed', resumedAt: now - 10_000, finishedAt: now - 5_000 })).toBeCloseTo(700 / 65, 6);
    // The stopped generation processed 500 lines in its 60 s; the retry took 400 of them (its open
    // shards) out of the count to embed again: 500 + 300 new lines in 70 s, not 400 in 70 s.
    expect(view({ ...retried, rowsEmbedded: 400, linesRedone: 400, resumedAt: now - 10_000 })).toBeCloseTo(800 / 70, 6);
    // Never retried: from its start, as before.
    expect(view({ startedAt: now - 70_000, resumedAt: now - 70_000 })).toBeCloseTo(10, 6);
  });

  it("counts shards in the CLI's progress line as English does: 1 shard, 2 shards, 1/8 shards", () => {
    expect(progressLine(record({ shardsWritten: 1, totalShards: null }))).toMatch(/ 1 shard$/);
    expect(progressLine(record({ shardsWritten: 2, totalShards: null }))).toMatch(/ 2 shards$/);
    expect(progressLine(record({ shardsWritten: 1, totalShards: 8 }))).toMatch(/ 1\/8 shards$/);
  });

  it('shows an input with no line, once split, as all done (it showed 0.0% and an empty bar, completed)', () => {
    expect(progressLine(record({ state: 'completed', totalLines: 0, totalShards: 0, shardsWritten: 0 }))).toMatch(/^completed +\[█{24}\] · 100\.0% 0\/0 lines/);
    expect(progressLine(record({ totalLines: null }))).toMatch(/\[·{24}\]/);
  });

  it('shows a limit the gate has not learned as none, not as the configured one', () => {
    const state = { configured: { requestsPerMinute: 6_000, tokensPerMinute: 24_000_000 }, inForce: { requestsPerMinute: 540, tokensPerMinute: 23_760_000 }, shared: false, slowStart: false };
    expect(rateFigures('text-embedding-v4', { ...state, learned: { requestsPerMinute: 600 } }, 'workers').learned).toEqual({ requests: 600, tokens: null });
    expect(rateFigures('text-embedding-v4', { ...state, learned: {} }, 'workers').learned).toBeNull();
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

describe('dashboard login redirect', () => {
  it.each([
    ['/', '/'],
    ['/queues', '/queues'],
    ['/api/jobs?limit=5#top', '/api/jobs?limit=5#top'],
    ['/jobs/é', '/jobs/%C3%A9'],
    [undefined, '/'],
    ['', '/'],
    ['queues', '/'],
    ['https://evil.example.com/x', '/'],
    ['//evil.example.com/x', '/'],
    // Browsers read a backslash as a slash, and drop tabs and newlines: each of these led off-site.
    ['/\\evil.example.com/x', '/'],
    ['/\t/evil.example.com/x', '/'],
    ['/\n/evil.example.com', '/'],
    ['/%5Cevil.example.com', '/%5Cevil.example.com'],
    // Normalized to the path `//evil.com`, which a Location header sends off-site.
    ['/.//evil.com', '/'],
    ['/..//evil.com', '/'],
    ['/a/..//evil.com', '/'],
    ['/a//b', '/a//b'],
    // The URL parser refuses these: the login answered 500, with or without the token.
    ['//', '/'],
    ['//[', '/'],
  ])('next %j goes to %j', (next, path) => expect(loginRedirectPath(next)).toBe(path));
});

describe('the page\'s event stream', () => {
  // A PassThrough nobody reads stands for a client that stays connected and stops reading: its
  // write() says false once 1 KB waits, as a socket does once the kernel's buffers are full.
  const snapshot = (tick: number) => ({ tick, jobs: 'x'.repeat(2_000) });
  const ticksIn = (text: string): number[] => [...text.matchAll(/"tick":(\d+)/g)].map((match) => Number(match[1]));

  it('keeps only the newest snapshot for a client that stopped reading, and sends it once the client reads again', async () => {
    const client = new PassThrough({ highWaterMark: 1_024 });
    const stream = snapshotStream(client);
    for (let tick = 1; tick <= 100; tick += 1) stream.send(snapshot(tick));
    // Before, every snapshot was buffered for it: 100 of them here, one a second for as long as it stayed.
    expect(client.writableLength + client.readableLength).toBeLessThan(3 * 2_100);
    let read = '';
    client.on('data', (chunk: Buffer) => (read += chunk.toString()));
    await new Promise((resolve) => setImmediate(resolve));
    expect(ticksIn(read)).toEqual([1, 100]);
    stream.send(snapshot(101));
    await new Promise((resolve) => setImmediate(resolve));
    expect(ticksIn(read)).toEqual([1, 100, 101]);
    stream.close();
  });

  it('closes a client that drains nothing for the stall limit', async () => {
    const client = new PassThrough({ highWaterMark: 1_024 });
    const stream = snapshotStream(client, 50);
    stream.send(snapshot(1));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(client.destroyed).toBe(true);
    stream.send(snapshot(2));
    stream.close();
  });
});
