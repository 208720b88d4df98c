import { randomBytes } from 'node:crypto';

import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cancelCorpusJob, retryCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import { installScheduler, nextTick, removeScheduler, ScheduleStore } from '../../jobs/schedule-store.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { RateGate } from '../../src/rate/rate-gate.js';
import { createRedisClient } from '../../src/redis/redis-client.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startDashboard } from '../support/dashboard.js';
import { startRedisCluster, type TestRedisCluster } from '../support/redis-cluster.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * The pipeline on a real three-master Redis Cluster (`REDIS_CLUSTER_NODES`, prefix `{t…}`): a
 * corpus job submitted by the CLI and run by workers in two processes, with 429s, 5xx and
 * shuffled answers, ends with exact output; cancel and retry (the scripts that drop a job's
 * buffers) work there; so do the rate gate, schedules and output leases.
 */
const SHARD_ROWS = 50;
const parameters = embeddingParameters(parseJobOptions({ input: 'x', output: 'y' }));

describe('on a Redis Cluster', () => {
  let cluster: TestRedisCluster;
  let world: World;
  let masters: Redis[] = [];
  const corpus = buildCorpus('data/', { textLines: 150 });
  const folders: string[] = [];
  const prefix = `{t${randomBytes(4).toString('hex')}}`;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    // ~25 requests: at 5% a fault fired not at all in about one run in four; at 20% about one in 250.
    world = await startWorld(
      { seed: 5, faults: { failRate429: { requests: 0.2, tokens: 0, burst: 0 }, failRate500: 0.2, shuffleRate: 1, latencyMs: { min: 5, median: 15, p99: 40 } } },
      { REDIS_URL: undefined, REDIS_CLUSTER_NODES: cluster.nodes.join(','), EMBEDQ_REDIS_PREFIX: prefix },
    );
    for (const object of corpus.objects) await world.put(object.key, object.body);
    masters = cluster.nodes.map((node) => new Redis(`redis://${node}`));
  });
  afterAll(async () => {
    await world?.close();
    for (const master of masters) master.disconnect();
    await cluster?.stop();
    for (const folder of folders) await removeFolder(folder);
  });

  /** Keys of this test's prefix on each master, found by asking every master itself. */
  const keysPerMaster = async (pattern = `${prefix}*`): Promise<string[][]> => Promise.all(masters.map((master) => master.keys(pattern)));

  it('runs a corpus job with workers in two processes to exact output, every key in the prefix’s slot', async () => {
    expect(world.services.redis).toBeInstanceOf(Cluster);
    const child = spawnEmbedq(world.env, ['worker', '--concurrency', '4']);
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/cluster-a/', '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      const record = await waitForJob(world.services, id);
      expect(record.error).toBeNull();
      expect(record.state).toBe('completed');
      const status = await runEmbedq(world.env, ['status', id, '--json']);
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ id, state: 'completed' });
    } finally {
      await pool.close();
      await stopProcess(child);
    }
    expect(world.emulator.stats().byStatus['429'] ?? 0).toBeGreaterThan(0);
    expect(world.emulator.stats().byStatus['500'] ?? 0).toBeGreaterThan(0);

    const { folder } = await downloadPrefix(world.s3, 'out', 'cluster-a/');
    folders.push(folder);
    await verifyOutput(folder, corpus.expected, parameters, SHARD_ROWS);

    // The dashboard reads the same state from the cluster: the job, Bull Board, the workers' metrics.
    const dashboard = await startDashboard(world.services);
    try {
      const get = (path: string): Promise<Response> => fetch(`${dashboard.url}${path}`);
      const jobs = (await (await get('/api/jobs')).json()) as Array<{ id: string; state: string }>;
      expect(jobs.map((job) => job.state)).toEqual(['completed']);
      expect(await (await get('/healthz')).json()).toMatchObject({ ok: true });
      expect((await get('/queues/api/queues')).status).toBe(200);
      const metrics = await (await get('/metrics')).text();
      expect(metrics).toMatch(/^embedq_lines_total\{outcome="embedded"\} [1-9]/m);
      expect(metrics).toMatch(/^embedq_corpus_jobs\{state="completed"\} 1$/m);
    } finally {
      await dashboard.close();
    }

    // Job records, BullMQ queues, the rate gate, metrics: all on the one master that owns the slot
    // (the output lease is gone with the job's end; the last test checks leases).
    const perMaster = await keysPerMaster();
    const holders = perMaster.filter((keys) => keys.length > 0);
    expect(holders).toHaveLength(1);
    const kinds = new Set(holders[0]!.map((key) => key.slice(prefix.length + 1).split(':')[0]));
    for (const kind of ['jobs', 'job', 'split', 'embed-v4', 'write', 'rate', 'metrics']) expect([...kinds]).toContain(kind);
  });

  it('cancel drops the job’s open buffers on the cluster, and retry finishes it with exact output', async () => {
    world.emulator.setFaults({ failRate429: { requests: 0, tokens: 0, burst: 0 }, failRate500: 0, latencyMs: { min: 300, median: 400, p99: 500 } });
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/cluster-b/', '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.batchesDone >= 3 || record.state !== 'running' && record.state !== 'queued');
      const open = world.services.corpora.keys.openShards(id);
      expect(await world.services.redis.scard(open)).toBeGreaterThan(0);
      // What `embedq cancel` and `retry` call (the first test ran the CLI; here timing matters).
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      expect(await world.services.corpora.state(id)).toBe('cancelled');
      // No buffer survives, on any master.
      expect((await keysPerMaster(`${prefix}:job:${id}:shard:*`)).flat()).toEqual([]);
      expect(await world.services.redis.exists(open)).toBe(0);

      world.emulator.setFaults({ latencyMs: { min: 5, median: 10, p99: 20 } });
      await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id);
      const record = await waitForJob(world.services, id);
      expect(record.error).toBeNull();
      expect(record.state).toBe('completed');
      expect(record.generation).toBe(1);
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'cluster-b/');
    folders.push(folder);
    await verifyOutput(folder, corpus.expected, parameters, SHARD_ROWS);
  });

  it('a command gives up on an unreachable cluster within seconds, naming REDIS_CLUSTER_NODES with the password masked', async () => {
    const env = { ...world.env, REDIS_CLUSTER_NODES: 'redis://:hunter2secret@127.0.0.1:1' };
    const started = Date.now();
    const result = await runEmbedq(env, ['status', 'cj-nothing']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('REDIS_UNAVAILABLE: cannot reach Redis at REDIS_CLUSTER_NODES=redis://:***@127.0.0.1:1');
    expect(result.stderr).not.toContain('hunter2secret');
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  // ioredis wraps a cluster's refusal ("Failed to refresh slots cache.", the node's answer inside):
  // it said REDIS_UNAVAILABLE (exit 1), and the worker started and waited for good.
  it('a wrong or missing cluster password is CONFIG_INVALID (exit 2) for a command and the worker', async () => {
    await Promise.all(masters.map((master) => master.config('SET', 'requirepass', 'cluster-pw')));
    try {
      for (const nodes of [cluster.nodes.map((node) => `redis://:wrong@${node}`).join(','), cluster.nodes.join(',')]) {
        const env = { ...world.env, REDIS_CLUSTER_NODES: nodes };
        const listed = await runEmbedq(env, ['list']);
        expect(listed.stderr).toMatch(/^embedq: CONFIG_INVALID: Redis at REDIS_CLUSTER_NODES=\S+ refused the credentials \((WRONGPASS|NOAUTH) /);
        expect(listed.code).toBe(2);
        const worker = await runEmbedq(env, ['worker']);
        expect(worker.stderr).toContain('refused the credentials');
        expect(worker.code).toBe(2);
      }
    } finally {
      await Promise.all(masters.map((master) => master.config('SET', 'requirepass', '')));
    }
  });

  it('rate gate: two cluster clients share one evenly spaced rate', async () => {
    const other = createRedisClient({ clusterNodes: cluster.nodes });
    try {
      const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
      const key = `${prefix}:rate:smoke`;
      // No slow start and a long booking horizon: the test looks at the shared schedule itself.
      const steady = { targetUtilization: 1, slowStartFraction: 1, horizonMs: 60_000 };
      const gates = [new RateGate(world.services.redis, key, limits, steady), new RateGate(other, key, limits, steady)];
      // Asked for at once, by both clients: one schedule gives a slot every 10 ms whichever client
      // took it (two schedules interleave: gaps of 2 and 8 ms in one try). The slots are on Redis's
      // clock: a busy test process does not stretch them (timed on its own clock, one loaded run saw
      // 656 ms for 390).
      const reservations = await Promise.all(Array.from({ length: 40 }, (_, index) => gates[index % 2]!.reserve(1)));
      const slots = reservations.map((reservation) => reservation.slotMs).sort((a, b) => a - b);
      const gaps = slots.slice(1).map((slot, index) => slot - slots[index]!);
      expect(Math.min(...gaps)).toBeGreaterThan(9.5);
      expect(slots[39]! - slots[0]!).toBeLessThan(390 + 200);
    } finally {
      other.disconnect();
    }
  });

  it('schedules and output leases: one claim wins a race, the Job Scheduler plans the next tick, a lease has one holder', async () => {
    const schedules = new ScheduleStore(world.services.redis, prefix);
    await schedules.upsert({ name: 'nightly', cron: '0 3 * * *', tz: 'UTC', input: 's3://corpus/data/', out: 's3://out/n/{date}/', options: {}, incremental: false, onOverlap: 'skip' });
    const claims = await Promise.all(['cj-a', 'cj-b', 'cj-c'].map((runId) => schedules.claim('nightly', runId, world.services.corpora)));
    expect(claims.filter((claim) => claim.claimed)).toHaveLength(1);
    const queue = world.services.queues[QUEUES.schedule];
    await installScheduler(queue, { name: 'nightly', cron: '0 3 * * *', tz: 'UTC' });
    expect(await nextTick(queue, 'nightly')).toBeGreaterThan(Date.now());
    await removeScheduler(queue, 'nightly');
    expect(await nextTick(queue, 'nightly')).toBeNull();

    const leases = world.services.corpora.leases;
    expect(await leases.acquire('s3://out/leased/', 'cj-one')).toBeUndefined();
    expect(await leases.acquire('s3://out/leased', 'cj-two')).toEqual({ jobId: 'cj-one', ending: false });
    await leases.release('s3://out/leased/', 'cj-two');
    expect(await leases.holder('s3://out/leased/')).toEqual({ jobId: 'cj-one', ending: false });
    await leases.release('s3://out/leased/', 'cj-one');
    expect(await leases.holder('s3://out/leased/')).toBeUndefined();
  });
});

/**
 * A cluster whose deployment slot cannot be served: a master gone without a replica, so every node
 * says CLUSTERDOWN. ioredis retries that, then fails with "Too many Cluster redirections", which
 * embedq did not take for an outage: `status` and `submit --wait` exited with INTERNAL, the
 * dashboard answered 500 and /healthz 200 (its PING went to a node that answers PING anyway).
 */
describe('on a Redis Cluster that goes down (CLUSTERDOWN)', () => {
  let cluster: TestRedisCluster;
  let world: World;
  const prefix = `{d${randomBytes(4).toString('hex')}}`;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    world = await startWorld({ seed: 6 }, { REDIS_URL: undefined, REDIS_CLUSTER_NODES: cluster.nodes.join(','), EMBEDQ_REDIS_PREFIX: prefix, EMBEDQ_WAIT_REDIS_OUTAGE_S: '6' });
    // Three batches at one request a minute: the job is still running when the cluster goes down.
    await world.put('down/a.txt', Array.from({ length: 30 }, (_, index) => `line ${index}`).join('\n'));
  });
  afterAll(async () => {
    await world?.close();
    await cluster?.stop();
  });

  it('status and submit --wait say REDIS_UNAVAILABLE, the dashboard answers 503 and /healthz 503, workers log the outage without stacks', { timeout: 90_000 }, async () => {
    const waiting = spawnEmbedq(world.env, ['submit', 's3://corpus/down/', '--out', 's3://out/down/', '--wait']);
    const waitOutput = { stdout: '', stderr: '' };
    waiting.stdout!.on('data', (chunk: Buffer) => (waitOutput.stdout += chunk.toString()));
    waiting.stderr!.on('data', (chunk: Buffer) => (waitOutput.stderr += chunk.toString()));
    const waited = new Promise<number | null>((resolve) => waiting.once('exit', resolve));
    const worker = spawnEmbedq({ ...world.env, EMBEDQ_QPM: '1', LOG_LEVEL: 'info' }, ['worker']);
    const workerLog = { text: '' };
    worker.stdout!.on('data', (chunk: Buffer) => (workerLog.text += chunk.toString()));
    const dashboard = await startDashboard(world.services);
    try {
      await expect.poll(() => workerLog.text, { timeout: 30_000 }).toContain('workers started');
      await expect.poll(() => waitOutput.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      const id = /cj-\S+/.exec(waitOutput.stdout)![0];
      expect((await fetch(`${dashboard.url}/healthz`)).status).toBe(200);

      // Shut down a master that does not hold the prefix's slot: the cluster goes down all the same.
      const ownerPort = await cluster.masterOf(prefix);
      const victim = new Redis(`redis://${cluster.nodes.find((node) => !node.endsWith(`:${ownerPort}`))}`).on('error', () => undefined);
      await victim.call('SHUTDOWN', 'NOSAVE').catch(() => undefined);
      victim.disconnect();
      const owner = new Redis(`redis://127.0.0.1:${ownerPort}`);
      await expect.poll(async () => owner.cluster('INFO'), { timeout: 20_000, interval: 250 }).toContain('cluster_state:fail');
      owner.disconnect();

      const status = await runEmbedq(world.env, ['status', id]);
      expect(status.stderr).toMatch(/^embedq: REDIS_UNAVAILABLE: /);
      expect(status.code).toBe(1);
      await expect.poll(async () => (await fetch(`${dashboard.url}/healthz`)).status, { timeout: 10_000 }).toBe(503);
      await expect.poll(async () => (await fetch(`${dashboard.url}/api/jobs`)).status, { timeout: 10_000 }).toBe(503);
      // --wait took it for an outage, waited EMBEDQ_WAIT_REDIS_OUTAGE_S, then gave up as REDIS_UNAVAILABLE.
      expect(await waited).toBe(1);
      expect(waitOutput.stderr).toMatch(/lost Redis at REDIS_CLUSTER_NODES=/);
      expect(waitOutput.stderr).toMatch(/REDIS_UNAVAILABLE/);
      expect(waitOutput.stderr).not.toMatch(/INTERNAL|\n\s+at /);
      await expect.poll(() => workerLog.text, { timeout: 15_000 }).toMatch(/"code":"REDIS_UNAVAILABLE"/);
      const warnings = workerLog.text.split('\n').filter((line) => line.includes('"level":40'));
      expect(warnings.filter((line) => line.includes('"stack"')), warnings.slice(0, 3).join('\n')).toEqual([]);
    } finally {
      await dashboard.close();
      await stopProcess(waiting, 'SIGKILL');
      await stopProcess(worker, 'SIGKILL');
    }
  });
});
