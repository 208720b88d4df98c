import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { clockSkewProblem, readClockSkew } from '../../src/redis/redis-clock.js';

describe("a worker's clock against Redis's (real Redis)", () => {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('agrees on one machine: nothing to say', async () => {
    const skew = await readClockSkew(redis);
    expect(Math.abs(skew)).toBeLessThan(1_000);
    expect(clockSkewProblem(skew)).toBeUndefined();
  });

  it('measures a clock ahead or behind, and says what it breaks', async () => {
    const ahead = await readClockSkew(redis, () => Date.now() + 300_000);
    expect(Math.abs(ahead - 300_000)).toBeLessThan(1_000);
    expect(clockSkewProblem(ahead)).toMatch(/^this machine's clock is 30\d\.\d s ahead of Redis's: schedule ticks .* keep every machine's clock in sync/);
    const behind = await readClockSkew(redis, () => Date.now() - 90_000);
    expect(clockSkewProblem(behind)).toMatch(/^this machine's clock is (89|90)\.\d s behind Redis's/);
  });
});
