import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { CorpusKeys } from '../../jobs/corpus-keys.js';
import { CorpusStore } from '../../jobs/corpus-store.js';
import { JobStateLostError } from '../../jobs/job-errors.js';
import { embedQueue, QUEUES } from '../../jobs/queues.js';
import type { ShardStats } from '../../jobs/shard-ledger.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { sleep } from '../../src/sleep.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * Part of a running job's state gone from Redis (a key deleted by hand, evicted under a
 * maxmemory-policy other than noeviction, a partial restore): the job must fail with a clear
 * error naming what was lost, not stay `running` forever, and `embedq retry` must then finish it
 * exactly. Real worker processes, s3rver and the emulator.
 */
const SHARD_ROWS = 40;
const parameters = embeddingParameters(parseJobOptions({ input: 'x', output: 'y' }));

/** The checks themselves, step by step on real Redis: each loss found, and no healthy state taken for one. */
describe('the lost-state checks', () => {
  let redis: Redis;
  let store: CorpusStore;
  const prefix = `ls${randomBytes(4).toString('hex')}`;
  const options = parseJobOptions({ input: 's3://corpus/x.txt', output: 's3://out/x/' });
  const summary = { expectedBatches: 2, blank: 0, truncated: 0, inputErrors: [], firstRow: 0, lastRow: 19 };
  const counts = { embedded: 10, tokens: 100, rejected: 0, shardRows: 40 };
  const stats = (shard: number): ShardStats => ({
    shard, file: `part-${shard}.parquet`, firstRow: 0, lastRow: 19, rows: 20, bytes: 1, errors: 0, errorsKey: null,
    blank: 0, truncated: 0, tokens: 200, batches: 2,
  });
  const running = async (id: string): Promise<void> => {
    await store.jobs.create(id, options);
    expect(await store.jobs.markRunning(id, 0)).toBe(true);
  };
  /** Shard `shard` closed and both its batches stored: complete, ready for its writer. */
  const completeShard = async (id: string, shard: number): Promise<void> => {
    expect(await store.buffers.closeShard(id, 0, shard, summary)).toBe('open');
    expect(await store.buffers.storeBatch(id, 0, shard, 0, Buffer.from('batch 0'), [], counts)).toBe('open');
    expect(await store.buffers.storeBatch(id, 0, shard, 1, Buffer.from('batch 1'), [], counts)).toBe('complete');
  };

  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
    store = new CorpusStore(redis, prefix);
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('a healthy job passes every check: shards written, open, not yet opened; a stopped job is only inactive', async () => {
    const id = 'cj-healthy';
    await running(id);
    await completeShard(id, 0);
    expect(await store.ledger.markWritten(id, 0, stats(0))).toMatchObject({ status: 'recorded', shardsWritten: 1 });
    // Written: its buffer is gone with it, which is no loss; a late batch of it is told so.
    expect(await store.buffers.storeBatch(id, 0, 0, 1, Buffer.from('late'), [], counts)).toBe('written');
    expect(await store.buffers.checkWhole(id, 0, 0)).toBe(true);
    expect(await store.buffers.closeShard(id, 0, 1, summary)).toBe('open');
    expect(await store.buffers.checkWhole(id, 0, 1)).toBe(true);
    expect(await store.buffers.checkWhole(id, 0, 2)).toBe(true);
    expect(await store.buffers.storeBatch(id, 0, 2, 0, Buffer.from('first of an unclosed shard'), [], counts)).toBe('open');
    expect(await store.jobs.markFailed(id, 'stopped', 'INTERNAL', 0)).toBe(true);
    expect(await store.buffers.checkWhole(id, 0, 1)).toBe(false);
  });

  it('a job whose record is lost has its other keys removed (its buffers stayed for good); a job with its record keeps them', async () => {
    const jobKeys = (id: string): Promise<string[]> => redis.keys(`${prefix}:job:${id}*`);
    await running('cj-kept');
    await completeShard('cj-kept', 0);
    expect(await store.jobs.forgetLost('cj-kept')).toBe(false);
    expect((await jobKeys('cj-kept')).length).toBeGreaterThan(1);

    await running('cj-gone');
    await completeShard('cj-gone', 0);
    expect(await store.buffers.closeShard('cj-gone', 0, 1, summary)).toBe('open');
    expect(await redis.zscore(store.keys.jobs, 'cj-gone')).not.toBeNull();
    await redis.del(store.keys.job('cj-gone'));
    expect(await jobKeys('cj-gone')).toHaveLength(3); // two buffers and the open set
    expect(await store.jobs.forgetLost('cj-gone')).toBe(true);
    expect(await jobKeys('cj-gone')).toEqual([]);
    expect(await redis.zscore(store.keys.jobs, 'cj-gone')).toBeNull();
  });

  it("a buffer lost after its last batch (before its writer) or mid-way is found by each step that meets it", async () => {
    const id = 'cj-buffer';
    await running(id);
    await completeShard(id, 0);
    await redis.del(store.keys.shard(id, 0));
    await expect(store.buffers.checkWhole(id, 0, 0)).rejects.toThrow(JobStateLostError);
    await expect(store.ledger.markWritten(id, 0, stats(0))).rejects.toThrow("shard 0's buffer");
    expect(await store.buffers.closeShard(id, 0, 1, summary)).toBe('open');
    await redis.del(store.keys.shard(id, 1));
    await expect(store.buffers.storeBatch(id, 0, 1, 0, Buffer.from('batch 0'), [], counts)).rejects.toThrow("shard 1's buffer");
    await expect(store.buffers.closeShard(id, 0, 1, summary)).rejects.toThrow("shard 1's buffer");
  });

  it('a ledger lost is found by the close, the writer and the room check', async () => {
    const id = 'cj-ledger';
    await running(id);
    await completeShard(id, 0);
    expect(await store.ledger.markWritten(id, 0, stats(0))).toMatchObject({ status: 'recorded' });
    await completeShard(id, 1);
    await redis.del(store.keys.writtenShards(id));
    const lost = /JOB_STATE_LOST|ledger of written shards/;
    await expect(store.ledger.markWritten(id, 0, stats(1))).rejects.toThrow(lost);
    await expect(store.buffers.closeShard(id, 0, 2, summary)).rejects.toThrow(lost);
    await expect(store.buffers.checkWhole(id, 0, 3)).rejects.toThrow(lost);
    // A retry rebuilds the counters from what the ledger holds, and the checks pass again.
    expect(await store.jobs.markFailed(id, 'lost', 'JOB_STATE_LOST', 0)).toBe(true);
    expect(await store.jobs.restart(id)).toEqual({ generation: 1 });
    expect(await store.jobs.markRunning(id, 1)).toBe(true);
    expect(await store.buffers.checkWhole(id, 1, 0)).toBe(true);
    expect(await store.buffers.closeShard(id, 1, 0, summary)).toBe('open');
  });
});

describe('partial loss of a job state in Redis', () => {
  let world: World;
  let keys: CorpusKeys;
  const corpus = buildCorpus('data/', { textLines: 200 });
  const folders: string[] = [];
  const submit = async (output: string): Promise<string> => {
    const result = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id']);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  };
  /** Fails on the lost state within `withinMs`, and `embedq retry` then writes the exact output. */
  const failsThenRetries = async (id: string, output: string, lost: RegExp, withinMs: number): Promise<void> => {
    const failed = await waitForJob(world.services, id, (record) => record.state !== 'running' && record.state !== 'queued', withinMs);
    expect(failed.state).toBe('failed');
    expect(failed.errorCode).toBe('JOB_STATE_LOST');
    expect(failed.error).toMatch(lost);
    expect(failed.error).not.toContain('JOB_STATE_LOST'); // the code is the record's errorCode, not said again in its error
    expect(failed.error).toContain(`embedq retry ${id}`);
    world.emulator.setFaults({ latencyMs: { min: 5, median: 10, p99: 20 } });
    const retried = await runEmbedq(world.env, ['retry', id]);
    expect(retried.code, retried.stderr).toBe(0);
    const record = await waitForJob(world.services, id, undefined, 60_000);
    expect(record.state, record.error ?? '').toBe('completed');
    const { folder } = await downloadPrefix(world.s3, 'out', output);
    folders.push(folder);
    await verifyOutput(folder, corpus.expected, parameters, SHARD_ROWS);
  };

  /** Runs `test` beside one worker process, requests at 100-200 ms (so a job is mid-run for seconds); kills it after. */
  const withWorker = async (test: () => Promise<void>): Promise<void> => {
    world.emulator.setFaults({ latencyMs: { min: 100, median: 150, p99: 200 } });
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    try {
      await test();
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
  };

  beforeAll(async () => {
    world = await startWorld({ seed: 13, faults: { latencyMs: { min: 100, median: 150, p99: 200 } } });
    keys = new CorpusKeys(world.settings.redisPrefix);
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(async () => {
    await world.close();
    for (const folder of folders) await removeFolder(folder);
  });

  it('an open shard buffer deleted mid-run: the job fails naming the shard, and a retry is exact', async () => {
    await withWorker(async () => {
      const id = await submit('s3://out/lost-buffer/');
      // A shard the split has closed (it knows how many batches to wait for) with batches still to come.
      let shard: string | undefined;
      const deadline = Date.now() + 30_000;
      while (shard === undefined && Date.now() < deadline) {
        for (const open of await world.services.redis.smembers(keys.openShards(id))) {
          const [expected, done] = await world.services.redis.hmget(keys.shard(id, Number(open)), 'expected', 'done');
          if (expected !== null && Number(done ?? 0) + 1 < Number(expected)) shard = open;
        }
        if (shard === undefined) await sleep(20);
      }
      expect(shard, 'no closed shard with batches still to come').toBeDefined();
      expect(await world.services.redis.del(keys.shard(id, Number(shard)))).toBe(1);
      await failsThenRetries(id, 'lost-buffer/', new RegExp(`shard ${shard}'s buffer`), 20_000);
    });
  });

  it("a queued embed step's record deleted mid-run (its id still queued): the job fails naming the step, and a retry is exact", async () => {
    await withWorker(async () => {
      const id = await submit('s3://out/lost-step/');
      const queue = world.services.queues[embedQueue('text-embedding-v4')];
      const queueKey = `${world.settings.redisPrefix}:${embedQueue('text-embedding-v4')}`;
      // Deleted only while still queued, in one script: a worker that took the step between the
      // listing and the delete had read its record, and embedded the batch (the job completed).
      const deleteIfQueued = (step: string): Promise<unknown> =>
        world.services.redis.eval(
          "if redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('LPOS', KEYS[3], ARGV[1]) then return redis.call('DEL', KEYS[1]) end return 0",
          3,
          `${queueKey}:${step}`,
          `${queueKey}:prioritized`,
          `${queueKey}:wait`,
          step,
        );
      let step: string | undefined;
      const deadline = Date.now() + 30_000;
      while (step === undefined && Date.now() < deadline) {
        const queued = (await queue.getJobs(['prioritized', 'waiting'], 0, -1)).map((job) => job.id!).filter((jobId) => jobId.startsWith(`${id}-g0-`)).at(-1);
        if (queued !== undefined && (await deleteIfQueued(queued)) === 1) step = queued;
        else await sleep(20);
      }
      expect(step, 'no queued embed step').toBeDefined();
      await failsThenRetries(id, 'lost-step/', new RegExp(`step ${step}'s record`), 20_000);
    });
  });

  it("a queued split step's record deleted before any worker took it: the job fails naming the step (it stayed queued for good), and a retry is exact", async () => {
    const id = await submit('s3://out/lost-split/');
    const step = `${id}-split-g0`;
    expect(await world.services.redis.del(`${world.settings.redisPrefix}:${QUEUES.split}:${step}`)).toBe(1);
    await withWorker(() => failsThenRetries(id, 'lost-split/', new RegExp(`step ${step}'s record`), 20_000));
  });

  it("a running job's record deleted: its workers stop it and remove its other keys within seconds", async () => {
    await withWorker(async () => {
      const id = await submit('s3://out/lost-record/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 2);
      expect(await world.services.redis.del(keys.job(id))).toBe(1);
      const deadline = Date.now() + 15_000;
      let left = await world.services.redis.keys(`${keys.job(id)}*`);
      while (left.length > 0 && Date.now() < deadline) {
        await sleep(100);
        left = await world.services.redis.keys(`${keys.job(id)}*`);
      }
      expect(left).toEqual([]);
    });
  });

  it('the ledger of written shards deleted mid-run: the job fails naming it, and a retry is exact', async () => {
    await withWorker(async () => {
      const id = await submit('s3://out/lost-ledger/');
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 1);
      expect(await world.services.redis.del(keys.writtenShards(id))).toBe(1);
      await failsThenRetries(id, 'lost-ledger/', /written shards/, 20_000);
    });
  });
});
