import type { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { startPrivateRedis, type PrivateRedis } from '../../src/redis/private-redis.js';
import { parseInfoMemory, redisMemoryProblem } from '../../src/redis/redis-memory.js';
import { sleep } from '../../src/sleep.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startDashboard } from '../support/dashboard.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

const SHARD_ROWS = 40;
const parameters = embeddingParameters(parseJobOptions({ input: 'x', output: 'y' }));

/**
 * A Redis at maxmemory (noeviction, as the runbook asks) refuses every write. BullMQ's workers
 * retried the refused fetch at once, in a loop: 140 refusals a second from one worker process,
 * each logged with its command's arguments, 22 MB of logs in a minute. Now the workers rest and
 * say so once; `status` names the cause; freeing memory lets the job finish, exact.
 */
describe('a full Redis', () => {
  let redis: PrivateRedis;
  let world: World;
  const corpus = buildCorpus('data/', { textLines: 200 });
  const folders: string[] = [];

  /** Sets maxmemory `headroom` bytes above what Redis uses, then fills it with other keys until it refuses one; their names. */
  const fillRedis = async (headroom: number): Promise<string[]> => {
    const client = world.services.redis;
    const used = parseInfoMemory(await client.info('memory')).usedBytes;
    await client.config('SET', 'maxmemory', String(used + headroom));
    const filler = Buffer.alloc(64 * 1024, 1);
    const fillers: string[] = [];
    while (await client.set(`filler:${fillers.length}`, filler).then(() => true, () => false)) fillers.push(`filler:${fillers.length}`);
    return fillers;
  };

  beforeAll(async () => {
    redis = await startPrivateRedis();
    world = await startWorld({ faults: { latencyMs: { min: 5, median: 10, p99: 20 } } }, { REDIS_URL: redis.url, LOG_LEVEL: 'info' });
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(async () => {
    await world.close();
    await redis.stop();
    for (const folder of folders) await removeFolder(folder);
  });

  it('makes the workers rest and say why once; status names it; once memory is freed the job finishes exact', { timeout: 90_000 }, async () => {
    const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/full/', '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id']);
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = submitted.stdout.trim();

    const client = world.services.redis;
    const fillers = await fillRedis(2 * 1024 * 1024);

    let log = '';
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '4']);
    worker.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    try {
      await sleep(6_000);
      const messages = log.split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { msg: string }).msg);
      const full = messages.filter((message) => message.startsWith('Redis is full and refuses writes'));
      expect(full).toHaveLength(1);
      // Before: thousands of `worker error` lines a second (95,183 in 12 s), each with its stack.
      expect(messages.filter((message) => message === 'worker error').length).toBeLessThan(10);
      expect(log.length).toBeLessThan(64 * 1024);
      // Nothing moved: the split never got its step.
      expect((await world.services.corpora.get(id))?.state).toBe('queued');

      const status = await runEmbedq(world.env, ['status', id]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/^redis {5}Redis is full \([\d.]+ MB used of maxmemory [\d.]+ MB\): it refuses writes/m);
      // The dashboard shows it above the jobs, and /metrics has what an alert needs.
      const dashboard = await startDashboard(world.services);
      try {
        expect((await dashboard.dashboard.state.refresh()).redisProblem).toMatch(/^Redis is full/);
        const metrics = await (await fetch(`${dashboard.url}/metrics`)).text();
        const gauge = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics)?.[1]);
        expect(gauge('embedq_redis_memory_used_bytes')).toBeGreaterThanOrEqual(gauge('embedq_redis_maxmemory_bytes'));
        expect(gauge('embedq_redis_maxmemory_bytes')).toBeGreaterThan(0);
      } finally {
        await dashboard.close();
      }

      // The operator frees memory: the job goes on by itself.
      await client.del(...fillers);
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
      // Said once the workers have gone a while without a refusal.
      for (let waited = 0; !log.includes('"msg":"Redis accepts writes again"') && waited < 20_000; waited += 200) await sleep(200);
      expect(log).toContain('"msg":"Redis accepts writes again"');
      expect(log).not.toContain('could not sweep failed jobs');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'full/');
    folders.push(folder);
    await verifyOutput(folder, corpus.expected, parameters, SHARD_ROWS);
  });

  it('a command refused by a full Redis says REDIS_FULL with the figures (exit 1); a submit that fails midway leaves no record and no lease', async () => {
    const client = world.services.redis;
    const fillers = await fillRedis(1024 * 1024);
    try {
      const refused = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/refused/']);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/^embedq: REDIS_FULL: Redis is full \([\d.]+ MB used of maxmemory [\d.]+ MB\)/m);
    } finally {
      await client.del(...fillers);
      await client.config('SET', 'maxmemory', '0');
    }

    // Redis refused the split's enqueue after the lease and the record were written (BullMQ's
    // script is the largest write of a submit, so the likeliest refused).
    const before = (await world.services.corpora.list(1_000)).length;
    const refusingQueue = { add: async () => Promise.reject(new Error("OOM command not allowed when used memory > 'maxmemory'.")) } as unknown as Queue;
    const deps = { corpora: world.services.corpora, splitQueue: refusingQueue, s3: () => world.services.s3() };
    const options = parseJobOptions({ input: 's3://corpus/data/', output: 's3://out/midway/' });
    await expect(submitCorpusJob(deps, options)).rejects.toThrow(/^OOM/);
    // Before: a record `queued` for good, and a lease refusing the next run into the output.
    expect(await world.services.corpora.list(1_000)).toHaveLength(before);
    expect(await world.services.corpora.leases.holder('s3://out/midway/')).toBeUndefined();
    const retried = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/midway/']);
    expect(retried.code, retried.stderr).toBe(0);
    await world.services.corpora.jobs.markCancelled(retried.stdout.trim());
  });

  it('names the other memory problems an operator should fix', () => {
    const megabyte = 1024 * 1024;
    expect(redisMemoryProblem({ usedBytes: 50 * megabyte, maxBytes: 0, policy: 'allkeys-lru' })).toBeUndefined();
    expect(redisMemoryProblem({ usedBytes: 50 * megabyte, maxBytes: 100 * megabyte, policy: 'noeviction' })).toBeUndefined();
    expect(redisMemoryProblem({ usedBytes: 95 * megabyte, maxBytes: 100 * megabyte, policy: 'noeviction' })).toMatch(/^Redis is nearly full \(95\.0 MB used of maxmemory 100\.0 MB\)/);
    expect(redisMemoryProblem({ usedBytes: 10 * megabyte, maxBytes: 100 * megabyte, policy: 'allkeys-lru' })).toMatch(/^maxmemory-policy is allkeys-lru .*set maxmemory-policy noeviction$/);
    // Refused with OOM, then INFO read a moment later dips below maxmemory (the refused command's
    // memory freed): still full. A clean-clone CI run printed "nearly full" for a refused submit.
    expect(redisMemoryProblem({ usedBytes: 97 * megabyte, maxBytes: 100 * megabyte, policy: 'noeviction' }, { refusedWrite: true })).toMatch(/^Redis is full \(97\.0 MB used of maxmemory 100\.0 MB\): it refuses writes/);
  });
});
