import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { CorpusStore } from '../../jobs/corpus-store.js';
import { TRANSITION } from '../../jobs/job-record-scripts.js';
import { parseJobOptions } from '../../src/job-options.js';
import { defineLuaScript } from '../../src/redis/lua-script.js';

/**
 * Scripts that drop a job's shard buffers are told the buffers' keys (a cluster routes by declared
 * keys), read from the job's open set just before. A shard opened in between is reported, and
 * the caller drops it in another round (a stopped job opens no more), so no buffer is left behind.
 */
describe('dropping open shard buffers with declared keys', () => {
  let redis: Redis;
  let splitterRedis: Redis;
  let store: CorpusStore;
  const prefix = `ob${randomBytes(4).toString('hex')}`;
  const options = parseJobOptions({ input: 's3://corpus/x.txt', output: 's3://out/x/' });
  const summary = { expectedBatches: 3, blank: 0, truncated: 0, inputErrors: [], firstRow: 0, lastRow: 9 };
  const bufferKeys = (id: string): Promise<string[]> => redis.keys(`${prefix}:job:${id}:shard:*`);

  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
    splitterRedis = new Redis(inject('redisUrl'));
    store = new CorpusStore(redis, prefix);
  });
  afterAll(async () => {
    await redis.quit();
    await splitterRedis.quit();
  });

  it('a stop whose list of buffers is stale says so; the rest go with the next round (here: retry)', async () => {
    const id = 'cj-stale';
    await store.jobs.create(id, options);
    expect(await store.jobs.markRunning(id, 0)).toBe(true);
    for (const shard of [0, 1]) expect(await store.buffers.closeShard(id, 0, shard, summary)).toBe('open');
    expect(await bufferKeys(id)).toHaveLength(2);

    const transition = defineLuaScript(redis, TRANSITION);
    // The caller read the open set when only shard 0 was open.
    const answer = await transition([store.keys.job(id), store.keys.openShards(id), store.keys.activeJobs, store.keys.shard(id, 0)], 'cancelled', 'queued,running', 'x', 'CANCELLED', 'finishedAt', 1, '', id, '0');
    expect(answer).toBe(2);
    expect(await store.state(id)).toBe('cancelled');
    expect(await bufferKeys(id)).toEqual([store.keys.shard(id, 1)]);
    // A stopped job opens no shard any more.
    expect(await store.buffers.closeShard(id, 0, 2, summary)).toBe('inactive');

    // Retry must not let the new generation find the old one's buffer under the same key.
    expect(await store.jobs.restart(id)).toEqual({ generation: 1 });
    expect(await bufferKeys(id)).toEqual([]);
    expect(await redis.exists(store.keys.openShards(id))).toBe(0);
  });

  it('a failure racing with shards being opened leaves no buffer behind', async () => {
    const id = 'cj-race';
    await store.jobs.create(id, options);
    await store.jobs.markRunning(id, 0);
    // Splitters (on a connection of their own, as in another process) keep opening shards, one
    // after another, until the job stops taking them.
    const splitters = new CorpusStore(splitterRedis, prefix);
    let next = 0;
    const opened: number[] = [];
    const splitter = async (): Promise<void> => {
      for (;;) {
        const shard = next++;
        if ((await splitters.buffers.closeShard(id, 0, shard, summary)) !== 'open') return;
        opened.push(shard);
      }
    };
    const running = Promise.all(Array.from({ length: 8 }, splitter));
    while (opened.length < 20) await new Promise((resolve) => setImmediate(resolve));
    expect(await store.jobs.markFailed(id, 'provider gone', 'INTERNAL', 0)).toBe(true);
    await running;
    expect(await bufferKeys(id)).toEqual([]);
    expect(await redis.exists(store.keys.openShards(id))).toBe(0);
  });
});
