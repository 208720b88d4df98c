import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import { installScheduler, removeScheduler } from '../../jobs/schedule-store.js';
import { parseJobOptions } from '../../src/job-options.js';
import { METRICS } from '../../src/metrics/metric-names.js';
import { sleep } from '../../src/sleep.js';
import { buildDashboard } from '../../workers/dashboard/server.js';
import { listSchedules } from '../../workers/schedule-list.js';
import { scheduleStore } from '../../workers/schedule-tick.js';
import { startWorkers, type WorkerPool } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startDashboard } from '../support/dashboard.js';
import { startWorld, waitForJob, type World } from '../support/world.js';
import { readJobRequestStats } from '../../src/metrics/read-metrics.js';

const TOKEN = 'dashboard-test-token-7f3a';
const API_KEY = 'sk-never-shown-8c1d9e';

interface Family {
  name: string;
  type: string;
  metrics: Array<{ value?: string; count?: string; labels?: Record<string, string>; buckets?: Record<string, string> }>;
}

/** Sum of a family's samples (histograms: their count), optionally filtered by labels. */
function total(families: Family[], name: string, labels: Record<string, string> = {}): number {
  const family = families.find((candidate) => candidate.name === name);
  if (!family) return Number.NaN;
  return family.metrics
    .filter((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value))
    .reduce((sum, metric) => sum + Number(metric.value ?? metric.count ?? 0), 0);
}

interface StrictSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface StrictFamily {
  name: string;
  type: string;
  samples: StrictSample[];
}

/**
 * Reads the text exposition format as strictly as Prometheus's own parser does, which the
 * parse-prometheus-text-format package does not: one HELP/TYPE block per family before its samples,
 * no family split or series repeated, and each histogram's buckets in ascending `le` order,
 * cumulative, ending at +Inf, then _sum and _count (the count equal to +Inf).
 */
function parseStrictly(text: string): Map<string, StrictFamily> {
  const families = new Map<string, StrictFamily>();
  const seen = new Set<string>();
  let current: StrictFamily | undefined;
  for (const line of text.split('\n').filter((line) => line !== '')) {
    const header = /^# (HELP|TYPE) ([a-zA-Z_:][\w:]*) (.*)$/.exec(line);
    if (header) {
      const [, kind, name, rest] = header as unknown as [string, string, string, string];
      if (current?.name !== name) {
        expect(families.has(name), `${name} declared twice`).toBe(false);
        families.set(name, (current = { name, type: 'untyped', samples: [] }));
      }
      expect(current.samples, `${name}: ${kind} after its samples`).toEqual([]);
      if (kind === 'TYPE') current.type = rest;
      continue;
    }
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(sample, line).not.toBeNull();
    const [, name, labelText = '', valueText] = sample as unknown as [string, string, string | undefined, string];
    const labels: Record<string, string> = {};
    const rest = labelText.replace(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"(?:,|$)/g, (_, key: string, value: string) => ((labels[key] = value), ''));
    expect(rest, `${line}: labels`).toBe('');
    const value = valueText === '+Inf' ? Infinity : Number(valueText);
    expect(Number.isNaN(value), `${line}: value`).toBe(false);
    const suffixes = current?.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
    expect(suffixes.map((suffix) => current?.name + suffix), `${line}: outside its family`).toContain(name);
    expect(seen.has(`${name}${JSON.stringify(labels)}`), `${line}: repeated`).toBe(false);
    seen.add(`${name}${JSON.stringify(labels)}`);
    current!.samples.push({ name, labels, value });
  }
  for (const [name, family] of families) {
    if (family.type !== 'histogram') continue;
    // Histograms here have no labels but le: one series of buckets, _sum, _count.
    const order = family.samples.map((sample) => sample.name.slice(name.length));
    const buckets = family.samples.filter((sample) => sample.name === `${name}_bucket`);
    expect(order, name).toEqual([...buckets.map(() => '_bucket'), '_sum', '_count']);
    const bounds = buckets.map((bucket) => (bucket.labels.le === '+Inf' ? Infinity : Number(bucket.labels.le)));
    expect(bounds.at(-1), `${name}: last bucket`).toBe(Infinity);
    expect(bounds, `${name}: le order`).toEqual([...bounds].sort((a, b) => a - b));
    expect(new Set(bounds).size, `${name}: le repeated`).toBe(bounds.length);
    const counts = buckets.map((bucket) => bucket.value);
    expect(counts, `${name}: cumulative`).toEqual([...counts].sort((a, b) => a - b));
    expect(counts.at(-1), `${name}: +Inf is the count`).toBe(family.samples.at(-1)!.value);
  }
  return families;
}

describe('dashboard: JSON API, /metrics and security against a real job', () => {
  let world: World;
  let dashboard: Awaited<ReturnType<typeof startDashboard>>;
  let pool: WorkerPool;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const get = (path: string, headers: Record<string, string> = auth) => fetch(dashboard.url + path, { headers });
  const scrape = async (): Promise<Family[]> => {
    const text = await (await get('/metrics')).text();
    parseStrictly(text);
    return parsePrometheusTextFormat(text) as Family[];
  };

  beforeAll(async () => {
    world = await startWorld(
      // Burst 429s: the metrics need some 429s, not a learned limit. Random RateQuota 429s can end
      // the gate's slow start early and slow the job for tens of seconds; at 9e1b609, before the
      // gate stopped ratcheting down on them, they kept it past its deadline in a clean-clone run.
      { faults: { latencyMs: { min: 20, median: 40, p99: 80 }, failRate429: { burst: 0.05 } } },
      // 1,200 requests a minute: a ~1,900-line job takes ~10 s, long enough to watch it move.
      { EMBEDQ_QPM: '1200', DASHSCOPE_API_KEY: API_KEY },
    );
    const corpus = buildCorpus('data/', { textLines: 1500 });
    for (const object of corpus.objects) await world.put(object.key, object.body);
    dashboard = await startDashboard(world.services, TOKEN);
    pool = startWorkers(world.services, { concurrency: 8 });
  });
  afterAll(async () => {
    await pool?.close();
    await dashboard?.close();
    await world?.close();
  });

  const submit = (name: string) =>
    submitCorpusJob(
      { corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: world.services.s3 },
      parseJobOptions({ input: 's3://corpus/data/', output: `s3://out/${name}/`, shardRows: 200, outputType: 'dense' }),
    );

  it('exposes every metric on /metrics, and each moves while a job runs', async () => {
    const before = await scrape();
    for (const metric of Object.values(METRICS)) expect(before.map((family) => family.name), metric.name).toContain(metric.name);
    expect(before.map((family) => family.name)).toContain('bullmq_job_count');
    const id = await submit('metrics');
    // Mid-job: queue depths show work, and a worker flush (every 5 s) has brought counters in.
    let during: Family[] = [];
    let sawBacklog = false;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      during = await scrape();
      sawBacklog ||= total(during, METRICS.embedBacklog.name) > 0;
      if (sawBacklog && total(during, METRICS.lines.name, { outcome: 'embedded' }) > 0) break;
      await sleep(250);
    }
    expect(sawBacklog).toBe(true);
    expect(total(during, METRICS.corpusJobs.name, { state: 'running' })).toBe(1);
    expect(total(during, METRICS.workers.name)).toBe(1);
    const record = await waitForJob(world.services, id);
    expect(record.state).toBe('completed');
    await world.services.metrics.flush();
    const after = await scrape();
    const moved = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    expect(moved(METRICS.lines.name, { outcome: 'embedded' })).toBe(record.rowsEmbedded);
    expect(moved(METRICS.lines.name, { outcome: 'blank' })).toBe(record.rowsBlank);
    expect(moved(METRICS.lines.name, { outcome: 'failed' })).toBe(record.rowsFailed);
    expect(moved(METRICS.tokens.name)).toBe(record.tokens);
    expect(moved(METRICS.requests.name, { outcome: 'ok', status: '200' })).toBeGreaterThanOrEqual(record.batchesTotal);
    expect(moved(METRICS.requests.name, { outcome: 'rate_limited', status: '429' })).toBeGreaterThan(0);
    expect(moved(METRICS.requests.name, { outcome: 'rejected', status: '400' })).toBeGreaterThan(0);
    expect(moved(METRICS.requestDuration.name)).toBe(moved(METRICS.requests.name));
    // The job's own counts (the dashboard's job view): every request of this window was its own.
    const jobStats = (await readJobRequestStats(world.services.redis, world.services.settings.redisPrefix, [id])).get(id);
    expect(jobStats).toEqual({ requests: moved(METRICS.requests.name), throttled: moved(METRICS.requests.name, { outcome: 'rate_limited', status: '429' }) });
    expect(moved(METRICS.shardWriteDuration.name)).toBe(record.totalShards);
    expect(moved(METRICS.corpusJobs.name, { state: 'completed' })).toBe(1);
    expect(total(after, METRICS.queueJobs.name, { queue: 'embed-v4' })).toBe(0);
    expect(total(after, METRICS.queueJobs.name, { queue: 'embed-v3' })).toBe(0);
    expect(total(after, METRICS.rateConfigured.name, { model: 'text-embedding-v4', unit: 'requests' })).toBe(1200);
    expect(total(after, METRICS.rateInForce.name, { model: 'text-embedding-v4', unit: 'requests' })).toBeGreaterThan(0);
    // The histogram's buckets are cumulative and end at +Inf = count.
    const latency = after.find((family) => family.name === METRICS.requestDuration.name)!.metrics[0]!;
    expect(Number(latency.buckets!['+Inf'])).toBe(Number(latency.count));

    const view = (await (await get(`/api/jobs/${id}`)).json()) as Record<string, unknown>;
    expect(view).toMatchObject({ id, state: 'completed', progress: 1, linesDone: record.totalLines, tokens: record.tokens });
    expect(view.throttled as number).toBeGreaterThan(0);
    expect(view.throttledShare as number).toBeGreaterThan(0);
    expect(view.estimatedCostUsd as number).toBeCloseTo((record.tokens / 1e6) * 0.07, 10);
    const firstErrors = view.firstErrors as Array<{ code: string }>;
    expect(firstErrors.length).toBeGreaterThan(0);
    expect(firstErrors.map((error) => error.code)).toContain('CONTENT_REJECTED');
  });

  it('cancels a running job and retries it through the JSON API, with the CLI functions', async () => {
    const id = await submit('cancel-retry');
    await waitForJob(world.services, id, (record) => record.state === 'running' && record.rowsEmbedded > 100);
    const post = (action: string) => fetch(`${dashboard.url}/api/jobs/${id}/${action}`, { method: 'POST', headers: auth });
    expect((await post('retry')).status).toBe(409); // running: nothing to retry
    const cancel = await post('cancel');
    expect(cancel.status).toBe(200);
    // As `embedq cancel`: it waited for the job's steps to stop, and gave the output back.
    expect(await cancel.json()).toEqual({ id, cancelled: true, settled: true });
    expect((await world.services.corpora.get(id))?.state).toBe('cancelled');
    expect(await world.services.corpora.leases.holder(`s3://out/cancel-retry/`)).toBeUndefined();
    expect((await post('cancel')).status).toBe(409);
    const jobs = (await (await get('/api/jobs')).json()) as Array<{ id: string; state: string }>;
    expect(jobs.find((job) => job.id === id)?.state).toBe('cancelled');
    const retry = await post('retry');
    expect(retry.status).toBe(200);
    const record = await waitForJob(world.services, id);
    expect(record.state).toBe('completed');
    expect(record.rowsEmbedded + record.rowsBlank + record.rowsFailed).toBe(record.totalLines);
    expect(record.generation).toBe(1);
    // A job Redis no longer has answers 404 with the CLI's message, for both actions.
    for (const action of ['cancel', 'retry']) {
      const lost = await fetch(`${dashboard.url}/api/jobs/cj-gone-000000/${action}`, { method: 'POST', headers: auth });
      expect(lost.status).toBe(404);
      expect(((await lost.json()) as { code: string }).code).toBe('JOB_LOST');
    }
  });

  it('lists schedules as `embedq schedule list --json` does, with the next tick', async () => {
    const schedules = scheduleStore(world.services);
    await schedules.upsert({
      name: 'nightly',
      cron: '0 2 * * *',
      tz: 'Asia/Singapore',
      input: 's3://corpus/data/',
      out: 's3://out/nightly/{date}/',
      options: { outputType: 'dense' },
      incremental: false,
      onOverlap: 'skip',
    });
    await installScheduler(world.services.queues[QUEUES.schedule], { name: 'nightly', cron: '0 2 * * *', tz: 'Asia/Singapore' });
    try {
      const listed = (await (await get('/api/schedules')).json()) as Array<{ name: string; next_run: string | null; tz: string }>;
      expect(listed).toEqual(await listSchedules(world.services));
      expect(listed).toHaveLength(1);
      // 02:00 in Singapore is 18:00 UTC the day before.
      expect(listed[0]!.next_run).toMatch(/T18:00:00\.000Z$/);
    } finally {
      await removeScheduler(world.services.queues[QUEUES.schedule], 'nightly');
      await schedules.remove('nightly');
    }
  });

  it('shows the shared rate gate as `embedq status` reads it: configured, learned, in force', async () => {
    const rates = (await (await get('/api/rates')).json()) as Array<{ model: string; configured: { requests: number }; learned: unknown; inForce: { requests: number } }>;
    const v4 = rates.find((rate) => rate.model === 'text-embedding-v4')!;
    const state = await world.services.rateGate('text-embedding-v4').state();
    expect(v4.configured.requests).toBe(1200); // EMBEDQ_QPM of this world
    expect(v4.configured.requests).toBe(state.configured.requestsPerMinute);
    expect(v4.inForce.requests).toBeGreaterThan(0);
    expect(v4.inForce.requests).toBeLessThanOrEqual(1200);
    expect(v4.learned === null).toBe(state.learned.requestsPerMinute === undefined && state.learned.tokensPerMinute === undefined);
  });

  it('requires the token everywhere but /healthz, by bearer or login cookie, and never shows the API key', async () => {
    for (const path of ['/', '/api/jobs', '/api/workers', '/api/schedules', '/metrics', '/queues', '/queues/api/queues']) {
      expect((await get(path, {})).status, path).toBe(401);
      expect((await get(path, { authorization: 'Bearer wrong' })).status, path).toBe(401);
      const ok = await get(path);
      expect(ok.status, path).toBe(200);
      expect(await ok.text(), path).not.toContain(API_KEY);
    }
    expect((await fetch(`${dashboard.url}/api/jobs/x/cancel`, { method: 'POST' })).status).toBe(401);
    expect((await get('/healthz', {})).status).toBe(200);
    expect((await get('/livez', {})).status).toBe(200);
    expect((await get('/favicon.ico', {})).status).toBe(204);
    // The scheme's name in any case (RFC 9110); `bearer` was refused.
    expect((await get('/api/jobs', { authorization: `bearer ${TOKEN}` })).status).toBe(200);
    // No page may be framed by another site (clickjacking the cancel button).
    for (const path of ['/', '/api/jobs', '/queues', '/login']) {
      const response = await get(path, path === '/login' ? {} : auth);
      expect(response.headers.get('x-frame-options'), path).toBe('DENY');
      // Styles and fonts only from the dashboard (Bull Board linked Google's fonts: e2e test).
      expect(response.headers.get('content-security-policy'), path).toBe("frame-ancestors 'none'; style-src 'self' 'unsafe-inline'; font-src 'self' data:");
    }
    // The login form leads back to the whole URL asked for, its query included (it was dropped).
    const asked = '/queues/queue/split?status=failed&page=2';
    const form = await (await get(asked, { accept: 'text/html' })).text();
    expect(form).toContain('name="next" value="/queues/queue/split?status=failed&#38;page=2"');
    const next = /name="next" value="([^"]*)"/.exec(form)![1]!.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)));
    const signedIn = await fetch(`${dashboard.url}/login`, { method: 'POST', body: new URLSearchParams({ token: TOKEN, next }), redirect: 'manual' });
    expect(signedIn.headers.get('location')).toBe(asked);
    expect(signedIn.headers.get('set-cookie')).not.toMatch(/;\s*Secure/i);
    // Behind a proxy that ends TLS, the cookie is Secure (it never was: the dashboard itself serves http).
    const proxied = await fetch(`${dashboard.url}/login`, {
      method: 'POST',
      headers: { 'x-forwarded-proto': 'https' },
      body: new URLSearchParams({ token: TOKEN, next: '/' }),
      redirect: 'manual',
    });
    expect(proxied.headers.get('set-cookie')).toMatch(/;\s*Secure/i);
    const login = await fetch(`${dashboard.url}/login`, {
      method: 'POST',
      body: new URLSearchParams({ token: TOKEN, next: '/' }),
      redirect: 'manual',
    });
    expect(login.status).toBe(303);
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    expect(cookie).not.toContain(TOKEN);
    expect((await get('/api/jobs', { cookie })).status).toBe(200);
    const wrong = await fetch(`${dashboard.url}/login`, { method: 'POST', body: new URLSearchParams({ token: 'nope' }), redirect: 'manual' });
    expect(wrong.status).toBe(401);
    // Only a path on the dashboard is followed or echoed: a browser reads `/\host` as `//host`.
    // `/.//evil.example.com` normalizes to the path `//evil.example.com`; `//` and `//[` answered 500, with or without the token.
    for (const next of ['/\\evil.example.com/x', '//evil.example.com/x', '/\t/evil.example.com/x', 'https://evil.example.com/', '/.//evil.example.com', '//', '//[']) {
      const signIn = (token: string) => fetch(`${dashboard.url}/login`, { method: 'POST', body: new URLSearchParams({ token, next }), redirect: 'manual' });
      expect((await signIn(TOKEN)).headers.get('location'), next).toBe('/');
      expect(await (await signIn('nope')).text(), next).toContain('name="next" value="/"');
    }
    const back = await fetch(`${dashboard.url}/login`, { method: 'POST', body: new URLSearchParams({ token: TOKEN, next: '/queues' }), redirect: 'manual' });
    expect(back.headers.get('location')).toBe('/queues');
    const events = await fetch(`${dashboard.url}/api/events`, { headers: auth });
    const reader = events.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(first).toMatch(/^data: \{"at":/);
    expect(first).not.toContain(API_KEY);
    // HEAD gets the stream's headers at once (it got nothing: no body is written to flush them).
    const head = await fetch(`${dashboard.url}/api/events`, { method: 'HEAD', headers: auth, signal: AbortSignal.timeout(5_000) });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/event-stream');
  });

  it('refuses a non-loopback host without a token', async () => {
    await expect(buildDashboard(world.services, { host: '0.0.0.0' })).rejects.toThrow(/EMBEDQ_DASHBOARD_TOKEN/);
    const open = await buildDashboard(world.services, { host: '127.0.0.1' });
    expect((await open.app.inject({ method: 'GET', url: '/api/schedules' })).json()).toEqual([]);
    await open.app.close();
  });

  it('refuses writes from other sites, and without a token any Host but a loopback name (CSRF, DNS rebinding)', async () => {
    const open = await startDashboard(world.services);
    try {
      const cancel = (headers: Record<string, string>) => fetch(`${open.url}/api/jobs/cj-gone-000000/cancel`, { method: 'POST', headers, body: 'x' });
      // A form or fetch on any page: refused before it reaches the job (it cancelled it).
      const forgeries: Array<Record<string, string>> = [
        { origin: 'http://attacker.example.com', 'content-type': 'text/plain' },
        { origin: 'null' },
        { referer: 'http://attacker.example.com/page' },
        { origin: open.url.replace('127.0.0.1', 'localhost') },
      ];
      for (const headers of forgeries) {
        expect((await cancel(headers)).status, JSON.stringify(headers)).toBe(403);
      }
      // The page's own fetch, and curl (neither header), reach the job: 404, it is gone.
      expect((await cancel({ origin: open.url })).status).toBe(404);
      expect((await cancel({ referer: `${open.url}/` })).status).toBe(404);
      expect((await cancel({})).status).toBe(404);
      // A name rebound to 127.0.0.1 is not this dashboard's; loopback names with any port are.
      const read = (host: string) => open.dashboard.app.inject({ method: 'GET', url: '/api/schedules', headers: { host } });
      for (const host of ['attacker.example.com', 'attacker.example.com:8080', '127.0.0.1.nip.io', '10.0.0.5:8080']) {
        expect((await read(host)).statusCode, host).toBe(403);
      }
      for (const host of ['localhost', 'localhost:8080', '127.0.0.1:9', '[::1]:8080']) expect((await read(host)).statusCode, host).toBe(200);
    } finally {
      await open.close();
    }
    // With a token, any name may reach it (it may sit behind a DNS name), but a cross-site write is still refused.
    expect((await dashboard.dashboard.app.inject({ method: 'GET', url: '/api/schedules', headers: { ...auth, host: 'dashboard.example.com' } })).statusCode).toBe(200);
    const forged = await fetch(`${dashboard.url}/api/jobs/cj-gone-000000/cancel`, { method: 'POST', headers: { ...auth, origin: 'http://attacker.example.com' } });
    expect(forged.status).toBe(403);
  });
});

describe('dashboard: /metrics in the text format, before and after the workers count', () => {
  let world: World;
  let dashboard: Awaited<ReturnType<typeof startDashboard>>;
  beforeAll(async () => {
    world = await startWorld(); // its own key prefix: nothing counted yet
    dashboard = await startDashboard(world.services);
  });
  afterAll(async () => {
    await dashboard?.close();
    await world?.close();
  });
  const scrape = async () => parseStrictly(await (await fetch(`${dashboard.url}/metrics`)).text());
  const series = (families: Awaited<ReturnType<typeof scrape>>, name: string) =>
    families.get(name)!.samples.map((sample) => [sample.name, sample.labels, sample.value]);

  it('shows every bucket of every histogram, in order and zeros included, and the known counter series as 0', async () => {
    const histogram = (name: string, buckets: readonly number[], values: number[], sum: number) => [
      ...[...buckets.map(String), '+Inf'].map((le, index) => [`${name}_bucket`, { le }, values[index]]),
      [`${name}_sum`, {}, sum],
      [`${name}_count`, {}, values.at(-1)],
    ];
    const { requestDuration, shardWriteDuration, lines, requests } = METRICS;
    // Nothing observed yet: before, each histogram was a lone `_count 0`, and labelled counters absent.
    const fresh = await scrape();
    expect(series(fresh, requestDuration.name)).toEqual(histogram(requestDuration.name, requestDuration.buckets, Array(13).fill(0), 0));
    expect(series(fresh, shardWriteDuration.name)).toEqual(histogram(shardWriteDuration.name, shardWriteDuration.buckets, Array(11).fill(0), 0));
    expect(series(fresh, lines.name)).toEqual(['embedded', 'failed', 'blank'].map((outcome) => [lines.name, { outcome }, 0]));
    expect(series(fresh, requests.name)).toEqual([
      [requests.name, { outcome: 'ok', status: '200' }, 0],
      [requests.name, { outcome: 'rate_limited', status: '429' }, 0],
    ]);

    // Observations above the lowest bucket: it stays in the output at 0, and the hash's order
    // (the +Inf bucket written before the others) does not show.
    world.services.metrics.observe(requestDuration, 70);
    await world.services.metrics.flush();
    world.services.metrics.observe(requestDuration, 0.15);
    world.services.metrics.increment(requests, { outcome: 'unavailable', status: '503' });
    await world.services.metrics.flush();
    const counted = await scrape();
    expect(series(counted, requestDuration.name)).toEqual(histogram(requestDuration.name, requestDuration.buckets, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2], 70.15));
    expect(series(counted, shardWriteDuration.name)).toEqual(histogram(shardWriteDuration.name, shardWriteDuration.buckets, Array(11).fill(0), 0));
    expect(series(counted, requests.name)).toContainEqual([requests.name, { outcome: 'unavailable', status: '503' }, 1]);
    expect(series(counted, requests.name)).toContainEqual([requests.name, { outcome: 'ok', status: '200' }, 0]);
  });
});

describe('dashboard: every queued or running job, however many newer ones there are', () => {
  let world: World;
  let dashboard: Awaited<ReturnType<typeof startDashboard>>;
  beforeAll(async () => {
    world = await startWorld();
    dashboard = await startDashboard(world.services);
  });
  afterAll(async () => {
    await dashboard?.close();
    await world?.close();
  });
  const listed = async (): Promise<Array<Record<string, unknown>>> => (await fetch(`${dashboard.url}/api/jobs`)).json() as Promise<Array<Record<string, unknown>>>;
  // A request that meets a refresh under way gets that refresh's snapshot, which may have been read
  // before the change just made: the checks below wait for one read after it.
  const listedIds = async (): Promise<unknown[]> => (await listed()).map((job) => job.id);

  it('shows a running job behind 60 newer ended ones (page, API, metrics), one shape for any job, and follows cancel, retry and prune', async () => {
    const { jobs } = world.services.corpora;
    const options = (name: string) => parseJobOptions({ input: 's3://corpus/data/', output: `s3://out/${name}/` });
    await jobs.create('cj-old-running', options('old'));
    expect(await jobs.markRunning('cj-old-running', 0)).toBe(true);
    await sleep(5);
    const newer = Array.from({ length: 60 }, (_, index) => `cj-new-${String(index).padStart(3, '0')}`);
    for (const id of newer) {
      await jobs.create(id, options(id));
      expect(await jobs.markFailed(id, 'failed on purpose', 'INTERNAL')).toBe(true);
    }

    // The newest 50, then the older job still running: before, it was not on the page at all once
    // 50 newer jobs existed (a schedule every minute makes them in 50 minutes).
    await expect.poll(listedIds).toEqual([...newer.slice(10).reverse(), 'cj-old-running']);
    const shown = await listed();
    expect(shown.at(-1)).toMatchObject({ state: 'running', linesDone: 0 });
    const events = await fetch(`${dashboard.url}/api/events`);
    const reader = events.body!.getReader();
    let streamed = '';
    while (!streamed.includes('\n\n')) streamed += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(streamed).toContain('"id":"cj-old-running"');

    // A job older than the list answers in the list's shape (it was the stored record, with other fields).
    const old = (await (await fetch(`${dashboard.url}/api/jobs/cj-new-000`)).json()) as Record<string, unknown>;
    expect(Object.keys(old).sort()).toEqual(Object.keys(shown[0]!).sort());
    expect(old).toMatchObject({ id: 'cj-new-000', state: 'failed', progress: null, error: 'failed on purpose', requests: 0 });
    expect((await fetch(`${dashboard.url}/api/jobs/cj-never`)).status).toBe(404);

    // Every running and queued job counts in the gauge, not only those among the newest.
    const gauge = async (state: string) =>
      parseStrictly(await (await fetch(`${dashboard.url}/metrics`)).text())
        .get(METRICS.corpusJobs.name)!
        .samples.find((sample) => sample.labels.state === state)!.value;
    expect(await gauge('running')).toBe(1);
    expect(await gauge('failed')).toBe(60);

    // The index follows the job: out when it ends, back on retry, gone with its record.
    const active = () => world.services.redis.zrange(`${world.services.settings.redisPrefix}:jobs:active`, 0, -1);
    expect(await jobs.markCancelled('cj-old-running')).toBe('cancelled');
    expect(await active()).toEqual([]);
    await expect.poll(listedIds).not.toContain('cj-old-running');
    expect(await jobs.restart('cj-old-running')).toEqual({ generation: 1 });
    expect(await active()).toEqual(['cj-old-running']);
    await expect.poll(async () => (await listed()).at(-1)).toMatchObject({ id: 'cj-old-running', state: 'queued' });
    expect(await jobs.markCancelled('cj-old-running')).toBe('cancelled');
    await jobs.restart('cj-old-running');
    await jobs.discard('cj-old-running');
    expect(await active()).toEqual([]);
    await jobs.create('cj-pruned', options('pruned'));
    expect(await jobs.markFailed('cj-pruned', 'x', 'INTERNAL')).toBe(true);
    expect(await jobs.prune((await world.services.corpora.now()) + 1_000)).toBe(61);
    expect(await active()).toEqual([]);
    await expect.poll(listed).toEqual([]);
  });
});
