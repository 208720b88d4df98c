import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { EmulatorStats } from '../../src/emulator/server.js';
import { type RateLimitedWorld, runEmbedq, spawnEmbedq, startRateLimitedWorld, stopProcess, type World } from '../support/world.js';

/** What the emulator allows: 15 requests a second. embedq is told the published 6,000 (the default), 6.7× too much. */
const REAL_QPM = 900;
const PER_SECOND = REAL_QPM / 60;

/** 429 share and mean accepted rate over the history's seconds from `skip` on (the last second is partial). */
function summarize(history: EmulatorStats['history'], skip: number): { share429: number; meanAccepted: number; seconds: number } {
  const seconds = history.slice(skip, -1);
  const requests = seconds.reduce((sum, second) => sum + second.requests, 0);
  const limited = seconds.reduce((sum, second) => sum + second.rateLimited, 0);
  const accepted = seconds.reduce((sum, second) => sum + second.accepted, 0);
  return { share429: limited / Math.max(1, requests), meanAccepted: accepted / Math.max(1, seconds.length), seconds: seconds.length };
}

describe('the gate finds a limit below the configured one', () => {
  let limited: RateLimitedWorld;
  let world: World;
  let emulator: RateLimitedWorld['emulator'];
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    // EMBEDQ_QPM unset: the model's published 6,000 QPM is the ceiling.
    limited = await startRateLimitedWorld(REAL_QPM);
    ({ world, emulator, env } = limited);
  });
  afterAll(() => limited?.close());

  it('converges on the real limit with few 429s, and a second job starts at the learned limit', async () => {
    const workers = [spawnEmbedq(env, ['worker', '--concurrency', '16']), spawnEmbedq(env, ['worker', '--concurrency', '16'])];
    let first: EmulatorStats;
    let second: EmulatorStats;
    try {
      const run1 = await runEmbedq(env, ['submit', 's3://corpus/data/', '--out', 's3://out/one/', '--output-type', 'dense', '--wait']);
      expect(run1.code, run1.stderr).toBe(0);
      first = await emulator.stats();
      // The learned limit is in Redis, and `embedq status` shows it next to the configured one.
      const status = await runEmbedq(env, ['status', run1.stdout.trim()]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/rate gate \(text-embedding-v4\): configured 6,000 QPM .*learned [\d,]+ QPM/);
      // `list` names the model too: each model has its own gate.
      const listed = await runEmbedq(env, ['list']);
      expect(listed.stdout).toMatch(new RegExp(`^${run1.stdout.trim()}  .+  text-embedding-v4  s3://corpus/data/ → s3://out/one/$`, 'm'));
      // `embedq plan` times the next run at the rates in force under it, not at the ceiling (a
      // seventh of the time here), and reads them as status does: by the live workers' settings,
      // not the shell's (here a reserve of 0.5 the workers do not have), tokens as well as requests.
      const planned = await runEmbedq({ ...env, EMBEDQ_RESERVE: '0.5' }, ['plan', 's3://corpus/data/', '--output-type', 'dense', '--json']);
      expect(planned.code, planned.stderr).toBe(0);
      const plan = JSON.parse(planned.stdout) as {
        requests: number;
        tokens: number;
        minutesAtQuota: number;
        limits: { requestsPerMinute: number; tokensPerMinute: number };
        paced: { requestsPerMinute: number; tokensPerMinute: number };
        learned: { requestsPerMinute?: number; pacedBy: string } | null;
      };
      expect(plan.learned?.requestsPerMinute).toBeGreaterThan(REAL_QPM * 0.5);
      expect(plan.learned!.requestsPerMinute).toBeLessThan(REAL_QPM * 1.5);
      expect(plan.learned!.pacedBy).toBe('workers');
      expect(plan.limits).toEqual({ requestsPerMinute: 6_000, tokensPerMinute: 24_000_000 });
      expect(plan.paced.requestsPerMinute).toBeLessThanOrEqual(plan.learned!.requestsPerMinute!);
      expect(plan.paced.tokensPerMinute).toBeCloseTo(24_000_000 * 0.99, 0);
      expect(plan.minutesAtQuota).toBeCloseTo(Math.max(plan.requests / plan.paced.requestsPerMinute, plan.tokens / plan.paced.tokensPerMinute), 6);
      const planText = await runEmbedq(env, ['plan', 's3://corpus/data/', '--output-type', 'dense']);
      expect(planText.stdout).toMatch(
        /time {7}~.* at [\d,]+ QPM \/ 23,760,000 TPM, the rate in force under the limit the gate learned on this account \([\d,]+ QPM, remembered \d+ min more; configured 6,000 QPM \/ 24,000,000 TPM; by the live workers' settings\)\n/,
      );
      await fetch(`${emulator.url}/emulator/stats/reset`, { method: 'POST' });
      const run2 = await runEmbedq(env, ['submit', 's3://corpus/data/', '--out', 's3://out/two/', '--output-type', 'dense', '--wait']);
      expect(run2.code, run2.stderr).toBe(0);
      second = await emulator.stats();
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
    // First job: told 6.7× too much. 10-20 429s while the slow start meets the limit (measured:
    // 14-17 of ~250 requests in this 16 s run, 6%), then nearly none. The bounds leave room for
    // the other test files sharing the two cores; the bench measures the targets on a 40 s run.
    expect(first.accepted).toBeGreaterThan(200);
    const overall1 = (first.byStatus['429'] ?? 0) / first.requests;
    expect(overall1).toBeLessThan(0.12);
    // Settled from the 8th second with traffic: beside other test files on two cores the first
    // requests leave late and the slow start's transient (two waves of 429s at most) can reach the
    // 6th second. Measured: 0-3 429s after it; ≥ 93% of the limit on a quiet machine, 77% at a
    // load average of 10 (workers short of CPU). The bench measures the targets.
    const settled1 = summarize(first.history, 8);
    expect(settled1.seconds).toBeGreaterThan(5);
    const history1 = JSON.stringify(first.history.map((second) => [second.accepted, second.rateLimited]));
    expect(settled1.share429, history1).toBeLessThan(0.03);
    expect(settled1.meanAccepted, history1).toBeGreaterThan(PER_SECOND * 0.65);
    // Second job: starts at the learned limit, not at 6,000 QPM.
    const overall2 = (second.byStatus['429'] ?? 0) / second.requests;
    expect(overall2, JSON.stringify(second.history.map((entry) => [entry.accepted, entry.rateLimited]))).toBeLessThan(0.03);
    const history2 = JSON.stringify(second.history.map((entry) => [entry.accepted, entry.rateLimited]));
    expect(summarize(second.history, 1).meanAccepted, history2).toBeGreaterThan(PER_SECOND * 0.65);
  }, 150_000); // two pipeline runs at 15 requests a second: ~45 s alone, more beside other test files
});
