import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { EmulatorStats } from '../../src/emulator/server.js';
import { startSteadyClient, type SteadySecond } from '../../src/emulator/steady-client.js';
import { type RateLimitedWorld, runEmbedq, spawnEmbedq, startRateLimitedWorld, stopProcess, type World } from '../support/world.js';

/** The account's limit: 15 requests a second. embedq is told it; another app uses 30% of it. */
const ACCOUNT_QPM = 900;
const OTHER_PER_SECOND = (ACCOUNT_QPM / 60) * 0.3;

/**
 * The gate hears of the other application only through its own 429s (far fewer than the other's);
 * nudges lower the learned limit until they stop. See README "Rate limits" and "Adaptive quota".
 *
 * It was opt-in while the gate missed these bounds. On the gate at d2f9e3d it passed 12 runs of 12
 * and then failed in a clean-clone CI run: at the configured limit embedq took 429s about one a
 * second for 14 s, never three in one strike window, so nothing cut, and the other client was
 * refused as often. Since 77baf10 such 429s count as a cluster; it then passed 16 runs of 16 (14
 * beside two busy-loop processes, 2 in the whole suite from a clean clone).
 */
describe('an account shared with another application', () => {
  let limited: RateLimitedWorld;
  let world: World;
  let emulator: RateLimitedWorld['emulator'];
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    limited = await startRateLimitedWorld(ACCOUNT_QPM, { EMBEDQ_QPM: String(ACCOUNT_QPM) });
    ({ world, emulator, env } = limited);
  });
  afterAll(() => limited?.close());

  it("leaves the other application's share: its 429s stop within seconds of embedq's first", async () => {
    const other = startSteadyClient(emulator.url, OTHER_PER_SECOND);
    const workers = [spawnEmbedq(env, ['worker', '--concurrency', '16']), spawnEmbedq(env, ['worker', '--concurrency', '16'])];
    let stats: EmulatorStats;
    let bySecond: Map<number, SteadySecond>;
    let start: number;
    let end: number;
    try {
      start = Math.floor(Date.now() / 1000);
      const run = await runEmbedq(env, ['submit', 's3://corpus/data/', '--out', 's3://out/shared/', '--output-type', 'dense', '--wait']);
      expect(run.code, run.stderr).toBe(0);
      end = Math.floor(Date.now() / 1000);
      stats = await emulator.stats();
    } finally {
      bySecond = await other.stop();
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
    // Per second of embedq's run: embedq's 429s (the emulator's less the other's) and the other's.
    const history = new Map(stats.history.map((second) => [second.second, second]));
    const rows = Array.from({ length: end - start }, (_, offset) => {
      const second = start + offset;
      const all = history.get(second);
      const theirs = bySecond.get(second) ?? { sent: 0, limited: 0, accepted: 0 };
      return { offset, embedqLimited: (all?.rateLimited ?? 0) - theirs.limited, embedqAccepted: (all?.accepted ?? 0) - theirs.accepted, ...theirs };
    });
    const trace = JSON.stringify(rows.map((row) => [row.embedqAccepted, row.embedqLimited, row.accepted, row.limited]));
    // embedq notices the other application by its own 429s (the slow start meets the full window).
    const noticed = rows.find((row) => row.embedqLimited > 0 || row.limited > 0);
    expect(noticed, trace).toBeDefined();
    // embedq hears of the other application only through its own 429s. Told the account's limit,
    // it treats one 429 every second or two as jitter, never learns, and goes on colliding with
    // the other client (measured: 7 429s in the 16 s from 10 s after the first). The target: from
    // 10 s after the first, at most a probe's few.
    const late = rows.filter((row) => row.offset >= noticed!.offset + 10).slice(0, -1);
    expect(late.length, trace).toBeGreaterThan(8);
    expect(late.reduce((sum, row) => sum + row.embedqLimited, 0), trace).toBeLessThanOrEqual(3);
    // And the other application is refused rarely from 5 s after it.
    const after = rows.filter((row) => row.offset >= noticed!.offset + 5).slice(0, -1);
    const sent = after.reduce((sum, row) => sum + row.sent, 0);
    const limited = after.reduce((sum, row) => sum + row.limited, 0);
    expect(sent, trace).toBeGreaterThan(40);
    expect(limited, trace).toBeLessThanOrEqual(3);
    // embedq still uses most of what the other leaves (15 − 4.5 a second); loose, since the test
    // files beside it starve the workers of CPU. The bench measures the target.
    const embedqAccepted = after.reduce((sum, row) => sum + row.embedqAccepted, 0);
    expect(embedqAccepted / after.length, trace).toBeGreaterThan((ACCOUNT_QPM / 60 - OTHER_PER_SECOND) * 0.6);
  }, 120_000);
});
