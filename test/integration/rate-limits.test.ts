import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type RateLimitedWorld, runEmbedq, spawnEmbedq, startRateLimitedWorld, stopProcess, waitForJob, type World } from '../support/world.js';

const QPM = 900; // 15 requests per second

describe('one global rate across worker processes', () => {
  let limited: RateLimitedWorld;
  let world: World;
  let emulator: RateLimitedWorld['emulator'];
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    // 98% of the limit leaves 20 ms a second for scheduling jitter: this file runs beside other
    // test files on two cores, which delays timers far more than a worker on its own machine sees.
    limited = await startRateLimitedWorld(QPM, { EMBEDQ_QPM: String(QPM), EMBEDQ_TARGET_UTILIZATION: '0.98' });
    ({ world, emulator, env } = limited);
  });
  afterAll(() => limited?.close());

  it('keeps two worker processes under the per-second limit with almost no 429s', async () => {
    const workers = [spawnEmbedq(env, ['worker', '--concurrency', '16']), spawnEmbedq(env, ['worker', '--concurrency', '16'])];
    try {
      // --wait follows the job to its end and exits 0 only on success.
      const submitted = await runEmbedq(env, ['submit', 's3://corpus/data/', '--out', 's3://out/rate/', '--output-type', 'dense', '--wait']);
      expect(submitted.code, submitted.stderr).toBe(0);
      expect(submitted.stderr).toMatch(/completed .*100\.0% 2,431\/2,431 lines/);
      const record = await waitForJob(world.services, submitted.stdout.trim());
      expect(record.state).toBe('completed');
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
    const stats = await emulator.stats();
    const requestsPerSecond = QPM / 60;
    expect(stats.accepted).toBeGreaterThan(200);
    // Never more than the limit in any sliding second (the emulator would have said 429 past it).
    expect(stats.maxRequestsPerSecond).toBeLessThanOrEqual(requestsPerSecond);
    const throttled = stats.byStatus['429'] ?? 0;
    expect(throttled / stats.requests).toBeLessThan(0.01);
    // And the quota was used: busy seconds ran at ≥ 85% of the limit.
    const busy = stats.history.slice(2, -2);
    const mean = busy.reduce((sum, second) => sum + second.accepted, 0) / busy.length;
    expect(mean).toBeGreaterThan(requestsPerSecond * 0.85);
  });
});
