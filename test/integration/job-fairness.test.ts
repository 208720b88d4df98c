import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { embedQueue, QUEUES } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { startWorkers } from '../../workers/start-workers.js';
import { startWorld, waitForJob, type World } from '../support/world.js';

const lines = (count: number, label: string): string => Array.from({ length: count }, (_, index) => `${label} line ${index}: some words to embed`).join('\n');

/**
 * A world at 20 requests a second with a big corpus (3,000 lines: 300 requests, 15 s; 200 of them
 * queued at a time, two open shards of 1,000) and a small one (30 lines).
 */
async function startTwoCorpusWorld(extraEnv: Record<string, string>): Promise<World> {
  const world = await startWorld({ faults: { latencyMs: { min: 5, median: 10, p99: 30 } } }, { EMBEDQ_QPM: '1200', ...extraEnv });
  await world.put('big.txt', lines(3_000, 'big'));
  await world.put('small.txt', lines(30, 'small'));
  return world;
}

/** Submits a dense job of 1,000-row shards (text-embedding-v4 at dimension 64 unless told otherwise). */
function submitIn(world: World, input: string, output: string, options: { model?: string; dimension?: number } = {}): Promise<string> {
  const { services } = world;
  return submitCorpusJob(
    { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() },
    parseJobOptions({ input, output, shardRows: 1_000, outputType: 'dense', dimension: 64, ...options }),
  );
}

describe('two jobs at once: a small job does not wait behind a big one', () => {
  let world: World;
  beforeAll(async () => {
    world = await startTwoCorpusWorld({ EMBEDQ_MAX_OPEN_SHARDS: '2' });
  });
  afterAll(() => world.close());

  it("embeds a 30-line job's batches before the big job's queued ones, without stopping the big job for long", async () => {
    const { services } = world;
    const submit = submitIn.bind(undefined, world);
    const pool = startWorkers(services, { concurrency: 4 });
    try {
      const big = await submit('s3://corpus/big.txt', 's3://out/big/');
      for (;;) {
        const record = await services.corpora.get(big);
        if ((record?.rowsEmbedded ?? 0) >= 100) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const queuedAhead = await services.queues[embedQueue('text-embedding-v4')].getJobCounts('waiting', 'prioritized');
      const bigBefore = (await services.corpora.get(big))!.rowsEmbedded;
      const small = await submit('s3://corpus/small.txt', 's3://out/small/');
      const smallRecord = await waitForJob(services, small);
      const bigAfter = await services.corpora.get(big);

      expect(smallRecord.state).toBe('completed');
      expect(smallRecord.rowsEmbedded).toBe(30);
      // The test means something only if the big job had many batches queued when the small one came.
      expect((queuedAhead.waiting ?? 0) + (queuedAhead.prioritized ?? 0)).toBeGreaterThanOrEqual(100);
      // In order of arrival the small job waited for every one of them (≥ 1,000 more big rows);
      // first, it waits for those in flight and its own split and write, a few dozen requests.
      expect(bigAfter!.state).toBe('running');
      expect(bigAfter!.rowsEmbedded - bigBefore).toBeLessThan(500);
    } finally {
      await pool.close();
    }
  });
});

describe('two jobs at once, every worker slot waiting for the gate: the small job still goes first', () => {
  let world: World;
  beforeAll(async () => {
    // 10 requests a second and 64 slots: the big job's batches hold every slot, waiting for the gate.
    world = await startTwoCorpusWorld({ EMBEDQ_MAX_OPEN_SHARDS: '2', EMBEDQ_QPM: '600' });
  });
  afterAll(() => world.close());

  it("embeds the 30-line job's requests next, not after the big job's 64 already waiting for slots", async () => {
    const { services } = world;
    const submit = submitIn.bind(undefined, world);
    const pool = startWorkers(services, { concurrency: 64 });
    try {
      const big = await submit('s3://corpus/big.txt', 's3://out/big/');
      await waitForJob(services, big, (record) => record.rowsEmbedded >= 100);
      const bigBefore = (await services.corpora.get(big))!.rowsEmbedded;
      const small = await submit('s3://corpus/small.txt', 's3://out/small/');
      expect((await waitForJob(services, small)).state).toBe('completed');
      const bigAfter = (await services.corpora.get(big))!;
      expect(bigAfter.state).toBe('running');
      // Waiting behind the 64 in the gate's queue, 6.4 s at 10 a second, the big job embedded 640
      // rows and more; now those booked in its horizon and what the small job's split, shard and
      // finalize take (about a second: 100 rows).
      expect(bigAfter.rowsEmbedded - bigBefore).toBeLessThan(350);
    } finally {
      await pool.close();
    }
  });
});

describe('two jobs at once on different models: each model has its own queue and slots', () => {
  let world: World;
  beforeAll(async () => {
    // 20 requests a second per model, and 16 slots.
    world = await startTwoCorpusWorld({ EMBEDQ_MAX_OPEN_SHARDS: '2', EMBEDQ_QPM: '1200' });
    await world.put('v3.txt', lines(1_000, 'v3'));
  });
  afterAll(() => world.close());

  it("keeps an older v4 job at its model's rate while a new v3 job starts, and the v3 job completes exact", async () => {
    const { services } = world;
    const submit = submitIn.bind(undefined, world);
    const pool = startWorkers(services, { concurrency: 16 });
    try {
      const v4 = await submit('s3://corpus/big.txt', 's3://out/v4/');
      // 100 batches sent: the new job's first 100 go ahead of the v4 job's queued ones (embedPriority).
      await waitForJob(services, v4, (record) => record.rowsEmbedded >= 1_000);
      const v3 = await submit('s3://corpus/v3.txt', 's3://out/v3/', { model: 'text-embedding-v3', dimension: 512 });
      await waitForJob(services, v3, (record) => record.rowsEmbedded >= 100);
      expect(await services.queues[embedQueue('text-embedding-v3')].getJobCounts('prioritized')).not.toEqual({ prioritized: 0 });
      // The v4 steps that held slots when the v3 job came have gone through v4's gate by now (16 at 20 a second).
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const v4Before = (await services.corpora.get(v4))!.rowsEmbedded;
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const v4After = (await services.corpora.get(v4))!;
      // 20 requests a second of 10 lines: ~600 rows in 3 s. In one queue for both models, every
      // slot freed went to the new job's batches (ahead by priority) to wait for v3's gate, and
      // the v4 job stood still, its quota unused, until the v3 job had sent as many batches.
      expect(v4After.state).toBe('running');
      expect(v4After.rowsEmbedded - v4Before).toBeGreaterThan(300);
      const v3Record = await waitForJob(services, v3);
      expect(v3Record).toMatchObject({ state: 'completed', rowsEmbedded: 1_000, rowsFailed: 0 });
    } finally {
      await pool.close();
    }
  });
});

describe('EMBEDQ_SPLIT_CONCURRENCY: how many jobs one worker splits at once', () => {
  let world: World;
  beforeAll(async () => {
    world = await startTwoCorpusWorld({ EMBEDQ_SPLIT_CONCURRENCY: '1' });
  });
  afterAll(() => world.close());

  it('keeps a job past that many queued while the others split (a split lasts while it reads its corpus: behind backpressure, until its last shards are queued)', async () => {
    const { services } = world;
    const submit = submitIn.bind(undefined, world);
    expect(world.settings.worker.splitConcurrency).toBe(1);
    const pool = startWorkers(services, { concurrency: 4 });
    try {
      const big = await submit('s3://corpus/big.txt', 's3://out/big/');
      await waitForJob(services, big, (record) => record.rowsEmbedded > 0);
      const small = await submit('s3://corpus/small.txt', 's3://out/small/');
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      expect((await services.corpora.get(big))!.state).toBe('running');
      expect(await services.corpora.get(small)).toMatchObject({ state: 'queued', linesRead: 0 });
    } finally {
      await pool.close();
    }
  });
});
