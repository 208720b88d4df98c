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
    const skew = (await readClockSkew(redis))!;
    expect(Math.abs(skew)).toBeLessThan(1_000);
    expect(clockSkewProblem(skew)).toBeUndefined();
  });

  it('measures a clock ahead or behind, and says what it breaks', async () => {
    const ahead = (await readClockSkew(redis, () => Date.now() + 300_000))!;
    expect(Math.abs(ahead - 300_000)).toBeLessThan(1_000);
    expect(clockSkewProblem(ahead)).toMatch(/^this machine's clock is 30\d\.\d s ahead of Redis's: schedule ticks .* keep every machine's clock in sync/);
    const behind = (await readClockSkew(redis, () => Date.now() - 90_000))!;
    expect(clockSkewProblem(behind)).toMatch(/^this machine's clock is (89|90)\.\d s behind Redis's/);
  });

  it('tells nothing from a reply slower than the skew tolerated (it waited for a Redis coming back)', async () => {
    // Each read of this clock is 2 s after the one before: the round trip "took" 2 s.
    let now = Date.now();
    const slow = (): number => (now += 2_000);
    // Before: 1 s "ahead" here; a worker whose Redis came up 70 s late logged 34.1 s behind.
    expect(await readClockSkew(redis, slow)).toBeUndefined();
  });
});
