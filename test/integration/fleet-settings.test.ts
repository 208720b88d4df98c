import type { ChildProcess } from 'node:child_process';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { sleep } from '../../src/sleep.js';
import { DashboardState } from '../../workers/dashboard/snapshot.js';
import { gateRates, storedSchedules } from '../../workers/dashboard/sources.js';
import { runEmbedq, spawnEmbedq, startWorld, stopProcess, type World } from '../support/world.js';

/**
 * Workers on one Redis with different EMBEDQ_QPM each book the shared gate with their own ceiling.
 * Two `embedq worker` processes (a heartbeat is per process) say so where the operator looks.
 */
describe('workers whose pacing settings differ', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
    await world.put('fleet.txt', 'one line\nanother line\n');
  });
  afterAll(() => world.close());
  const learnedKey = (): string => `${world.settings.redisPrefix}:rate:text-embedding-v4:${new URL(world.env.DASHSCOPE_BASE_URL!).host}:learned`;
  /** A learned limit, as the gate's cut writes it (rate-gate.test.ts teaches one the long way). */
  const learnLimit = async (requestsPerMinute: number): Promise<void> => {
    const [seconds] = await world.services.redis.time();
    const now = Number(seconds) * 1000;
    const f = Math.round(requestsPerMinute * 0.8);
    await world.services.redis.hset(learnedKey(), { rW: requestsPerMinute, rE0: Math.round(requestsPerMinute * 0.97), rA: 0, rCut: now, rRes: now, rN: 0, rF: f });
    await world.services.redis.pexpire(learnedKey(), 60_000);
  };

  it('the later worker warns at start naming both, the dashboard shows it, and status adds it below the gate line', async () => {
    const first = spawnEmbedq({ ...world.env, EMBEDQ_QPM: '1200' }, ['worker']);
    let second: ChildProcess | undefined;
    try {
      const deadline = Date.now() + 30_000;
      while (!(await liveWorkers(world.services.redis, world.services.settings.redisPrefix)).some((worker) => worker.pid === first.pid)) {
        if (Date.now() > deadline) throw new Error('the first worker did not start');
        await sleep(50);
      }
      second = spawnEmbedq({ ...world.env, EMBEDQ_QPM: '6000', EMBEDQ_RESERVE: '0.2' }, ['worker']);
      let log = '';
      second.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
      while (!log.includes('workers pace by different settings')) {
        if (Date.now() > deadline) throw new Error(`no warning: ${log}`);
        await sleep(50);
      }
      const workers = await liveWorkers(world.services.redis, world.services.settings.redisPrefix);
      const firstId = workers.find((worker) => worker.pid === first.pid)!.id;
      const secondId = `${firstId.split(':')[0]}:${second.pid}`;
      const warning = JSON.parse(log.split('\n').find((line) => line.includes('workers pace by different settings'))!) as { level: number; msg: string };
      expect(warning.level).toBe(40);
      expect(warning.msg).toContain(`EMBEDQ_QPM 6000 (${secondId}) vs 1200 (${firstId}); EMBEDQ_RESERVE 0.2 (${secondId}) vs 0 (${firstId})`);

      while (!(await liveWorkers(world.services.redis, world.services.settings.redisPrefix)).some((worker) => worker.pid === second!.pid)) await sleep(50);
      const state = new DashboardState(world.services, { rates: gateRates(world.services), schedules: storedSchedules(world.services) });
      const { fleetProblem } = await state.refresh();
      expect(fleetProblem).toContain('EMBEDQ_QPM');
      expect(fleetProblem).toContain(secondId);

      // status: the workers differ, so the gate line is read with the shell's settings and says so; the fleet line names what differs.
      const submitted = await runEmbedq({ ...world.env, EMBEDQ_QPM: '1200' }, ['submit', 's3://corpus/fleet.txt', '--out', 's3://out/fleet/']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const status = await runEmbedq({ ...world.env, EMBEDQ_QPM: '1500' }, ['status', submitted.stdout.trim()]);
      const gateLine = status.stdout.split('\n').find((text) => text.startsWith('rate gate'));
      expect(gateLine, status.stdout).toMatch(/^rate gate \(text-embedding-v4\): configured 1,500 QPM .*; the workers' settings differ \(below\): by this shell's$/);
      const line = status.stdout.split('\n').find((text) => text.startsWith('fleet '));
      expect(line, status.stdout).toContain(`EMBEDQ_QPM 1200 (${firstId}) vs 6000 (${secondId})`);
      expect(line).not.toContain('this shell');

      // plan under a learned limit: its time line points below, and the fleet line is there (it was not).
      await learnLimit(900);
      const plan = await runEmbedq({ ...world.env, EMBEDQ_QPM: '1500' }, ['plan', 's3://corpus/fleet.txt']);
      expect(plan.code, plan.stderr).toBe(0);
      expect(plan.stdout.split('\n').find((text) => text.startsWith('time '))).toMatch(/learned on this account \(900 QPM.*configured 1,500 QPM .*the workers' settings differ \(below\): by this shell's\)$/);
      expect(plan.stdout.split('\n').find((text) => text.startsWith('fleet '))).toContain(`EMBEDQ_QPM 1200 (${firstId}) vs 6000 (${secondId})`);
      const planJson = await runEmbedq({ ...world.env, EMBEDQ_QPM: '1500' }, ['plan', 's3://corpus/fleet.txt', '--json']);
      const { learned } = JSON.parse(planJson.stdout) as { learned: { requestsPerMinute: number; fleetProblem: string | null } };
      expect(learned.requestsPerMinute).toBe(900);
      expect(learned.fleetProblem).toContain(`EMBEDQ_QPM 1200 (${firstId}) vs 6000 (${secondId})`);
    } finally {
      await world.services.redis.del(learnedKey());
      await Promise.all([stopProcess(first), second && stopProcess(second)]);
    }
  });

  it('says nothing when the workers agree', async () => {
    const workers = [spawnEmbedq({ ...world.env, EMBEDQ_QPM: '1200' }, ['worker']), spawnEmbedq({ ...world.env, EMBEDQ_QPM: '1200' }, ['worker'])];
    let log = '';
    for (const worker of workers) worker.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    try {
      const deadline = Date.now() + 30_000;
      while ((await liveWorkers(world.services.redis, world.services.settings.redisPrefix)).filter((worker) => workers.some((child) => child.pid === worker.pid)).length < 2) {
        if (Date.now() > deadline) throw new Error('workers did not start');
        await sleep(50);
      }
      await sleep(500);
      const state = new DashboardState(world.services, { rates: gateRates(world.services), schedules: storedSchedules(world.services) });
      const snapshot = await state.refresh();
      expect(snapshot.fleetProblem).toBeNull();
      expect(log).not.toContain('workers pace by different settings');
      // The dashboard (this test's settings: no EMBEDQ_QPM) shows the gate the workers pace by.
      const v4 = snapshot.rates.find((rate) => rate.model === 'text-embedding-v4')!;
      expect(v4).toMatchObject({ configured: { requests: 1_200 }, pacedBy: 'workers' });
      // One gate per model and pacing, read at every refresh: a gate defines its scripts on the
      // Redis client, and a new one per read grew the dashboard's client for as long as it ran.
      const pacing = (await liveWorkers(world.services.redis, world.services.settings.redisPrefix))[0]!.pacing!;
      expect(world.services.rateGateAs('text-embedding-v4', { ...pacing })).toBe(world.services.rateGateAs('text-embedding-v4', pacing));

      // So does status from a shell without the workers' settings, even on another base URL:
      // read with the shell's own, it showed the default ceiling, and another gate's learned limit.
      await learnLimit(900);
      expect((await world.services.rateGate('text-embedding-v4').state()).learned.requestsPerMinute).toBe(900);
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/fleet.txt', '--out', 's3://out/fleet-agree/']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const shell = { ...world.env, DASHSCOPE_BASE_URL: 'https://dashscope-intl.aliyuncs.com', EMBEDQ_QPM: undefined };
      const status = await runEmbedq(shell, ['status', submitted.stdout.trim()]);
      const gateLine = status.stdout.split('\n').find((text) => text.startsWith('rate gate'));
      expect(gateLine, status.stdout).toMatch(/^rate gate \(text-embedding-v4\): configured 1,200 QPM .*; learned 900 QPM .*; by the live workers' settings$/);
      expect(status.stdout).not.toContain('fleet ');
      expect(status.stdout).not.toContain('none live');
    } finally {
      await world.services.redis.del(learnedKey());
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
  });
});
