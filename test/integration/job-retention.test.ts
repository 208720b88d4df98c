import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { UnrecoverableError, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { queueOptions, QUEUES } from '../../jobs/queues.js';
import { sleep } from '../../src/sleep.js';
import { sweepFailedJobs } from '../../workers/fail-on-lost-jobs.js';

import { parseJobOptions } from '../../src/job-options.js';
import { runEmbedq, startWorld, type World } from '../support/world.js';

const DAY = 24 * 60 * 60 * 1000;

/**
 * A service left running submits a job for every schedule tick. Records of ended jobs are kept for
 * EMBEDQ_JOB_RETENTION_DAYS and removed, with what else of them is left, at the next submit:
 * Redis (noeviction) must not grow with every run until it refuses writes.
 */
describe('records of ended jobs go after their retention', () => {
  let world: World;
  const outputs = path.join(tmpdir(), `embedq-retention-${process.pid}`);
  const redis = (): World['services']['redis'] => world.services.redis;
  const key = (suffix: string): string => `${world.settings.redisPrefix}:${suffix}`;

  /** A job as it stands `daysAgo` days after it was created, in `state`, with a ledger and pins when it failed. */
  const seed = async (id: string, daysAgo: number, state: 'completed' | 'failed' | 'cancelled' | 'running'): Promise<void> => {
    const jobs = world.services.corpora.jobs;
    const output = path.join(outputs, id);
    await jobs.create(id, parseJobOptions({ input: 's3://corpus/x.txt', output }), { leaseKey: world.services.corpora.leases.keyOf(output) });
    await jobs.markRunning(id, 0);
    if (state === 'completed') await jobs.markCompleted(id, 0);
    if (state === 'failed') await jobs.markFailed(id, 'a reason', 'INTERNAL', 0);
    if (state === 'cancelled') await world.services.corpora.jobs.markCancelled(id);
    const then = Date.now() - daysAgo * DAY;
    await redis().zadd(key('jobs'), then, id);
    await redis().hset(key(`job:${id}`), 'createdAt', then, ...(state === 'running' ? [] : ['finishedAt', then + 60_000]));
    if (state === 'failed') {
      // What a failed job keeps for `retry`: its written shards, the versions and ends of the objects its split read, and where its shards start.
      const shard = { shard: 0, file: 'part-00000.parquet', firstRow: 0, lastRow: 0, rows: 1, bytes: 900, errors: 0, errorsKey: null, blank: 0, truncated: 0, tokens: 2, batches: 1 };
      await redis().hset(key(`job:${id}:shards`), '0', JSON.stringify(shard));
      await redis().set(key(`job:${id}:pins`), '0123456789abcdef');
      await redis().rpush(key(`job:${id}:ends`), '1');
      await redis().hset(key(`job:${id}:starts`), '1', '0:4096:100');
    }
  };
  const keysOf = (id: string): Promise<string[]> => redis().keys(key(`job:${id}*`));
  const submit = (env: NodeJS.ProcessEnv, name: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    runEmbedq(env, ['submit', 's3://corpus/x.txt', '--out', path.join(outputs, name)]);

  beforeAll(async () => {
    world = await startWorld({}, { EMBEDQ_JOB_RETENTION_DAYS: '7' });
    await world.put('x.txt', 'one line\n');
  });
  afterAll(async () => {
    await world.close();
    await rm(outputs, { recursive: true, force: true });
  });

  it('a submit removes ended jobs older than the retention, with their ledger and pins, and keeps the rest', async () => {
    await seed('cj-old-completed', 10, 'completed');
    await seed('cj-old-failed', 9, 'failed');
    await seed('cj-old-cancelled', 8, 'cancelled');
    await seed('cj-recent-failed', 3, 'failed');
    await seed('cj-old-running', 12, 'running'); // a job that runs for weeks is no less alive
    expect(await keysOf('cj-old-failed')).toHaveLength(5);

    const submitted = await submit(world.env, 'new');
    expect(submitted.code, submitted.stderr).toBe(0);
    const fresh = submitted.stdout.trim();

    for (const gone of ['cj-old-completed', 'cj-old-failed', 'cj-old-cancelled']) {
      expect(await keysOf(gone)).toEqual([]);
      expect(await redis().zscore(key('jobs'), gone)).toBeNull();
    }
    for (const kept of ['cj-recent-failed', 'cj-old-running', fresh]) expect(await world.services.corpora.get(kept)).toBeDefined();
    expect(await keysOf('cj-recent-failed')).toHaveLength(5);
    expect((await world.services.corpora.list(100)).map((record) => record.id).sort()).toEqual(['cj-old-running', 'cj-recent-failed', fresh].sort());
    // Each output's last taker (what `retry` checks) goes with that job's record.
    const takers = await Promise.all((await redis().keys(key('taken:*'))).map((taken) => redis().get(taken)));
    expect(takers.sort()).toEqual(['cj-old-running', 'cj-recent-failed', fresh].sort());

    // What an operator sees for a job that went.
    const status = await runEmbedq(world.env, ['status', 'cj-old-failed']);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('JOB_LOST: job cj-old-failed no longer exists in Redis');
    expect(status.stderr).toContain('EMBEDQ_JOB_RETENTION_DAYS');
  });

  it('a job retried before its retention ran out is active again and stays', async () => {
    await seed('cj-retried', 10, 'failed');
    expect(await world.services.corpora.jobs.restart('cj-retried')).toEqual({ generation: 1 });
    await world.services.corpora.pruneEnded();
    expect((await world.services.corpora.get('cj-retried'))?.state).toBe('queued');
  });

  it('a prune steps over old jobs still running, and goes on past 100 records within its time budget', async () => {
    // 120 jobs running for weeks at the head of the index, then 150 ended ones: before, a prune read
    // only the 100 oldest, so the running ones stopped it, and with them out of the way it removed
    // 100 a submit.
    for (let index = 0; index < 120; index += 1) await seed(`cj-long-running-${index}`, 30 - index / 1000, 'running');
    for (let index = 0; index < 150; index += 1) await seed(`cj-ended-${index}`, 20 - index / 1000, index % 2 ? 'completed' : 'cancelled');
    const cutoff = Date.now() - 7 * DAY;
    // What a submit runs (the world keeps 7 days).
    expect(await world.services.corpora.pruneEnded()).toBe(150);
    const left = await redis().zrangebyscore(key('jobs'), '-inf', cutoff);
    expect(left.filter((id) => id.startsWith('cj-ended-'))).toEqual([]);
    expect(left.filter((id) => id.startsWith('cj-long-running-'))).toHaveLength(120);
    // The budget bounds a submit's share of a backlog: none spent, nothing read.
    await seed('cj-ended-late', 10, 'completed');
    expect(await world.services.corpora.jobs.prune(cutoff, 0)).toBe(0);
    expect(await world.services.corpora.jobs.prune(cutoff, 60_000)).toBe(1);
  });

  it('EMBEDQ_JOB_RETENTION_DAYS=0 keeps every record', async () => {
    await seed('cj-ancient', 400, 'completed');
    const submitted = await submit({ ...world.env, EMBEDQ_JOB_RETENTION_DAYS: '0' }, 'kept');
    expect(submitted.code, submitted.stderr).toBe(0);
    expect((await world.services.corpora.get('cj-ancient'))?.state).toBe('completed');
  });
});

describe('failed steps go with the retention too', () => {
  let world: World;
  beforeAll(async () => {
    // 1.7 s: what a failed step holds must not outlive it.
    world = await startWorld({}, { EMBEDQ_JOB_RETENTION_DAYS: String(2 / 86_400) });
  });
  afterAll(async () => world?.close());

  it("a failed step, which holds its lines' text, is removed once older than the retention", async () => {
    const queue = world.services.queues[QUEUES.write];
    // A bare BullMQ worker fails the steps, so no corpus job of ours is involved.
    const failer = new Worker(
      QUEUES.write,
      async () => {
        throw new UnrecoverableError('failed on purpose');
      },
      { ...queueOptions(world.settings.redisPrefix, world.services.workerConnection()), autorun: false },
    );
    const failedTwice = new Promise<void>((resolve) => {
      let failures = 0;
      failer.on('failed', () => ++failures === 2 && resolve());
    });
    void failer.run();
    await queue.add('old', { text: 'a line of a corpus long gone' }, { jobId: 'old-step' });
    await sleep(2_500);
    await queue.add('new', { text: 'a line of a job still kept' }, { jobId: 'new-step' });
    await failedTwice;
    await failer.close();
    expect((await queue.getFailed()).map((job) => job.id).sort()).toEqual(['new-step', 'old-step']);

    // Before, BullMQ kept the last 1,000 failed steps of each queue however old.
    const sweeper = sweepFailedJobs(world.services, [QUEUES.write]);
    try {
      await expect.poll(async () => (await queue.getFailed()).map((job) => job.id), { timeout: 10_000 }).toEqual(['new-step']);
    } finally {
      await sweeper.close();
    }
  });
});
