import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { embedQueue, QUEUES } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { processedLines } from '../../workers/commands/progress.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startWorld, waitForJob, type World } from '../support/world.js';

const SHARD_ROWS = 50;
const MAX_OPEN_SHARDS = 2;

describe('bounded Redis memory', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld({ faults: { latencyMs: { min: 5, median: 15, p99: 40 } } }, { EMBEDQ_MAX_OPEN_SHARDS: String(MAX_OPEN_SHARDS) });
    const corpus = buildCorpus('data/', { textLines: 1500 });
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(() => world.close());

  it('never holds more than maxOpenShards × shardRows lines in queued jobs and buffers, however long the corpus', async () => {
    const { services, settings } = world;
    const pool = startWorkers(services, { concurrency: 8 });
    let peakJobs = 0;
    let peakBuffers = 0;
    let samples = 0;
    // Samples where status would show fewer lines read than accounted for (embedded, failed, blank).
    const readBehind: Array<{ read: number; processed: number }> = [];
    try {
      const id = await submitCorpusJob(
        { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() },
        parseJobOptions({ input: 's3://corpus/data/', output: 's3://out/bp/', shardRows: SHARD_ROWS, outputType: 'dense' }),
      );
      const sampler = (async () => {
        for (;;) {
          const record = await services.corpora.get(id);
          const counts = await services.queues[embedQueue('text-embedding-v4')].getJobCounts('waiting', 'active', 'delayed', 'prioritized');
          const jobs = Object.values(counts).reduce((sum, count) => sum + count, 0);
          const buffers = await services.redis.keys(`${settings.redisPrefix}:job:${id}:shard:*`);
          peakJobs = Math.max(peakJobs, jobs);
          peakBuffers = Math.max(peakBuffers, buffers.length);
          if (record && record.totalLines === null && record.linesRead < processedLines(record)) readBehind.push({ read: record.linesRead, processed: processedLines(record) });
          samples += 1;
          if (!record || record.state !== 'running' && record.state !== 'queued') return;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const record = await waitForJob(services, id);
      await sampler;
      expect(record.state).toBe('completed');
      expect(record.totalShards).toBeGreaterThan(20);
    } finally {
      await pool.close();
    }
    expect(samples).toBeGreaterThan(20);
    // While the split waits for room, "lines read" is what it has handed on, never behind.
    expect(readBehind).toEqual([]);
    // Batches of ≤10 lines: at most MAX_OPEN_SHARDS × SHARD_ROWS / 10 embed jobs exist at once.
    expect(peakJobs).toBeGreaterThan(0);
    expect(peakJobs).toBeLessThanOrEqual((MAX_OPEN_SHARDS * SHARD_ROWS) / 10);
    expect(peakBuffers).toBeLessThanOrEqual(MAX_OPEN_SHARDS);
  });
});
