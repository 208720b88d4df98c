import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runEmbedq } from '../support/world.js';

/** `embedq plan` as a user runs it: a local corpus, no Redis, no DashScope. */
describe('embedq plan', () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-plan-'));
    // 600 short lines: 60 requests.
    await writeFile(path.join(folder, 'c.txt'), Array.from({ length: 600 }, (_, index) => `line ${index}`).join('\n'));
  });
  afterAll(() => rm(folder, { recursive: true, force: true }));

  it('times the run at the rate the gate paces at: the limit times the target utilisation, less the reserve (it used the whole limit)', async () => {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, EMBEDQ_QPM: '60', EMBEDQ_RESERVE: '0.5' };
    const json = await runEmbedq(env, ['plan', path.join(folder, 'c.txt'), '--json']);
    expect(json.code, json.stderr).toBe(0);
    const plan = JSON.parse(json.stdout) as { requests: number; minutesAtQuota: number; limits: { requestsPerMinute: number }; paced: { requestsPerMinute: number } };
    expect(plan.requests).toBe(60);
    expect(plan.limits.requestsPerMinute).toBe(60);
    expect(plan.paced.requestsPerMinute).toBeCloseTo(60 * 0.99 * 0.5, 6);
    expect(plan.minutesAtQuota).toBeCloseTo(60 / (60 * 0.99 * 0.5), 6);
    const text = await runEmbedq(env, ['plan', path.join(folder, 'c.txt')]);
    expect(text.stdout).toContain('time       ~2.0 min at 29 QPM / 11,880,000 TPM (60 / 24,000,000, 50% reserved, the gate aims at 99%)');
  });
});
