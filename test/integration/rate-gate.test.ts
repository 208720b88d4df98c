import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { RateGate } from '../../src/rate/rate-gate.js';

describe('RateGate (real Redis)', () => {
  let redisA: Redis;
  let redisB: Redis;
  beforeAll(() => {
    redisA = new Redis(inject('redisUrl'));
    redisB = new Redis(inject('redisUrl'));
  });
  afterAll(async () => {
    await redisA.quit();
    await redisB.quit();
  });
  const key = (): string => `test-gate:${randomBytes(4).toString('hex')}`;

  it('spaces requests evenly at the target rate, shared by every client of the key', async () => {
    const gateKey = key();
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const a = new RateGate(redisA, gateKey, limits, { targetUtilization: 0.99 });
    const b = new RateGate(redisB, gateKey, limits, { targetUtilization: 0.99 });
    const started = Date.now();
    const waits: number[] = [];
    for (let index = 0; index < 100; index += 1) {
      const reservation = await (index % 2 === 0 ? a : b).reserve(1);
      waits.push(reservation.waitMs + (Date.now() - started));
    }
    // Slots are 60000 / (6000 × 0.99) ≈ 10.1 ms apart, whichever client took them.
    const spacing = 60000 / (6000 * 0.99);
    const span = waits[99]! - waits[0]!;
    expect(span).toBeGreaterThan(99 * spacing - 15);
    expect(span).toBeLessThan(99 * spacing + 15);
    // No 1-second window holds more than the per-second limit of 100 (99% spacing leaves a slot spare per ~1.01 s).
    let maxInWindow = 0;
    for (let i = 0, j = 0; i < waits.length; i += 1) {
      while (waits[i]! - waits[j]! >= 1000) j += 1;
      maxInWindow = Math.max(maxInWindow, i - j + 1);
    }
    expect(maxInWindow).toBeLessThanOrEqual(100);
  });

  it('lets tokens bind when they are the tighter limit, and settles them with actual usage', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e9, tokensPerMinute: 60_000 }, { targetUtilization: 1 });
    // 1,000 tokens per second: each 500-token request pushes the next one 500 ms out.
    expect((await gate.reserve(500)).waitMs).toBe(0);
    const second = await gate.reserve(500);
    expect(second.waitMs).toBeGreaterThan(480);
    expect(second.waitMs).toBeLessThanOrEqual(500);
    // The first request actually used 100 tokens: 400 tokens' worth (400 ms) come back.
    await gate.settleTokens(500, 100);
    const third = await gate.reserve(1);
    expect(third.waitMs).toBeGreaterThan(580);
    expect(third.waitMs).toBeLessThanOrEqual(600);
  });

  it('skips a slot for a lone 429, cuts the shared rate for a cluster (once per cooldown), and recovers linearly', async () => {
    const gateKey = key();
    const options = { decreaseFactor: 0.5, penaltyCooldownMs: 500, recoveryPerSecond: 1, strikesToCut: 3, targetUtilization: 1 };
    const a = new RateGate(redisA, gateKey, { requestsPerMinute: 600, tokensPerMinute: 1e12 }, options);
    const b = new RateGate(redisB, gateKey, { requestsPerMinute: 600, tokensPerMinute: 1e12 }, options);
    // 600 QPM: one slot every 100 ms. A lone 429 gives up the next slot but keeps the rate.
    expect((await a.reserve(1)).waitMs).toBe(0);
    expect(await a.throttled('requests')).toBe(1);
    const afterSkip = await a.reserve(1);
    expect(afterSkip.waitMs).toBeGreaterThan(190);
    expect(afterSkip.factor).toBe(1);
    // The third 429 within the cooldown cuts the factor for every client of the key.
    expect(await b.throttled('requests')).toBe(1);
    expect(await b.throttled('requests')).toBeCloseTo(0.5, 2);
    expect((await a.reserve(1)).factor).toBeLessThan(0.6);
    // More 429s inside the cooldown came from requests already in flight: no second cut.
    for (let index = 0; index < 3; index += 1) expect(await a.throttled('tokens')).toBeGreaterThan(0.45);
    await new Promise((resolve) => setTimeout(resolve, 600));
    // +1 per second → back at 1 (the cap) 0.6 s after the cut from 0.5.
    expect((await a.reserve(1)).factor).toBeGreaterThan(0.99);
  });
});
