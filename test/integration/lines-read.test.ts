import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { CorpusStore } from '../../jobs/corpus-store.js';
import { parseJobOptions } from '../../src/job-options.js';

/**
 * "Lines read" is how far into the corpus a job has got. A split that starts again (its worker
 * stopped, died, or `embedq retry`) reads from the first line and skips the written shards; the
 * figure must not fall back meanwhile, or status shows more lines embedded than read.
 */
describe('lines read only grow', () => {
  let redis: Redis;
  let store: CorpusStore;
  const options = parseJobOptions({ input: 's3://corpus/x.txt', output: 's3://out/x/' });

  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
    store = new CorpusStore(redis, `lr${randomBytes(4).toString('hex')}`);
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('through a split that starts again and through a retry', async () => {
    const id = 'cj-lines-read';
    await store.jobs.create(id, options);
    expect(await store.jobs.markRunning(id, 0)).toBe(true);
    await store.jobs.setLinesRead(id, 0, 120);
    // The split starts again and reports its first lines.
    await store.jobs.setLinesRead(id, 0, 40);
    expect((await store.get(id))?.linesRead).toBe(120);
    await store.jobs.setLinesRead(id, 0, 160);
    expect((await store.get(id))?.linesRead).toBe(160);

    expect(await store.jobs.markFailed(id, 'a reason', 'INTERNAL', 0)).toBe(true);
    expect(await store.jobs.restart(id)).toEqual({ generation: 1 });
    expect((await store.get(id))?.linesRead).toBe(160);
    expect(await store.jobs.markRunning(id, 1)).toBe(true);
    await store.jobs.setLinesRead(id, 1, 60);
    expect((await store.get(id))?.linesRead).toBe(160);
    await store.jobs.setLinesRead(id, 1, 200);
    expect((await store.get(id))?.linesRead).toBe(200);
  });
});
