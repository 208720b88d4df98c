import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runEmbedq } from '../support/world.js';

/** A port nothing listens on: one the system gave a server that has closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

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

  it('reads a learned limit only where REDIS_URL is set; a Redis it cannot reach is a warning, and the time is at the configured limit', async () => {
    const port = await closedPort();
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, EMBEDQ_QPM: '60', REDIS_URL: `redis://:secret@127.0.0.1:${port}` };
    const json = await runEmbedq(env, ['plan', path.join(folder, 'c.txt'), '--json']);
    expect(json.code, json.stderr).toBe(0);
    const plan = JSON.parse(json.stdout) as { minutesAtQuota: number; learned: unknown; learned_error?: string };
    expect(plan.learned).toBeNull();
    expect(plan.learned_error).toBe(`cannot reach Redis at REDIS_URL=redis://:***@127.0.0.1:${port} (connect ECONNREFUSED 127.0.0.1:${port})`);
    expect(plan.minutesAtQuota).toBeCloseTo(60 / (60 * 0.99), 6);
    const text = await runEmbedq(env, ['plan', path.join(folder, 'c.txt')]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('time       ~1.0 min at 59 QPM / 23,760,000 TPM (60 / 24,000,000, the gate aims at 99%)\n');
    expect(text.stdout).toContain(`warning    learned limit not read, the time is at the configured limit: cannot reach Redis at REDIS_URL=redis://:***@127.0.0.1:${port}`);
    expect(text.stdout).not.toContain('secret');
  });
});
