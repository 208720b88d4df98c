import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startPrivateRedis, type PrivateRedis } from '../../src/redis/private-redis.js';
import { createRedisClient } from '../../src/redis/redis-client.js';
import { redisPersistenceProblem } from '../../src/redis/redis-persistence.js';
import { sleep } from '../../src/sleep.js';
import { spawnEmbedq, stopProcess } from '../support/world.js';

/** The runbook asks for AOF; a worker on a Redis that would forget everything on restart says so. */
describe('a Redis without an AOF', () => {
  let bare: PrivateRedis;
  let appendOnly: PrivateRedis;
  beforeAll(async () => {
    [bare, appendOnly] = await Promise.all([startPrivateRedis(), startPrivateRedis({ appendOnly: true })]);
  });
  afterAll(async () => {
    await Promise.all([bare.stop(), appendOnly.stop()]);
  });

  const problemOf = async (url: string): Promise<string | undefined> => {
    const client = createRedisClient({ url });
    try {
      return await redisPersistenceProblem(client);
    } finally {
      client.disconnect();
    }
  };

  it('is named: nothing on disk, or snapshots only; an AOF is fine', async () => {
    expect(await problemOf(bare.url)).toMatch(/^Redis keeps nothing on disk \(appendonly no, no save points\): a Redis restart loses every job/);
    expect(await problemOf(appendOnly.url)).toBeUndefined();
    const client = createRedisClient({ url: bare.url });
    try {
      await client.config('SET', 'save', '3600 1');
      expect(await problemOf(bare.url)).toMatch(/^Redis keeps snapshots only \(save 3600 1, appendonly no\): a restart takes it back to its last snapshot/);
    } finally {
      await client.config('SET', 'save', '');
      client.disconnect();
    }
  });

  it('makes `embedq worker` warn at start; the AOF Redis does not', async () => {
    const warnings = async (url: string): Promise<string[]> => {
      const env = { PATH: process.env.PATH, HOME: process.env.HOME, REDIS_URL: url, DASHSCOPE_BASE_URL: 'http://127.0.0.1:9', EMBEDQ_REDIS_PREFIX: 'persistence' };
      const worker = spawnEmbedq(env, ['worker']);
      let log = '';
      worker.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
      try {
        for (let waited = 0; !log.includes('workers started') && waited < 20_000; waited += 100) await sleep(100);
        await sleep(500);
      } finally {
        await stopProcess(worker);
      }
      const lines = log.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(lines.map((line) => line.msg)).toContain('workers started');
      return lines.filter((line) => line.level === 40).map((line) => line.msg);
    };
    expect(await warnings(bare.url)).toEqual([expect.stringMatching(/^Redis keeps nothing on disk/)]);
    expect(await warnings(appendOnly.url)).toEqual([]);
  });
});
