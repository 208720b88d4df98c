import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cancelCorpusJob, retryCorpusJob } from '../../jobs/enqueue.js';
import { embedQueue, JOB_NAMES, QUEUES, stepOwner } from '../../jobs/queues.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { sleep } from '../../src/sleep.js';
import { DashboardState } from '../../workers/dashboard/snapshot.js';
import { gateRates, storedSchedules } from '../../workers/dashboard/sources.js';
import { startPrivateRedis, type PrivateRedis } from '../../src/redis/private-redis.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * The chaos suite of issue 9: what operators do to a running pipeline (lose Redis, flush it, kill
 * workers at the worst moments, stop one mid-split, cancel and retry under load, restart the
 * object store) must end in exact output or a clear failure. Real worker processes, a private
 * redis-server with AOF (`appendfsync always`) that the test kills and restarts, s3rver (stopped
 * and started again on its port) and the emulator. (Two submits at once and re-runs into a used
 * output are in output-ownership.test.ts.)
 */
const SHARD_ROWS = 40;
const parameters = embeddingParameters(parseJobOptions({ input: 'x', output: 'y' }));

describe('chaos', () => {
  let redis: PrivateRedis;
  let world: World;
  const corpus = buildCorpus('data/', { textLines: 200 });
  const folders: string[] = [];
  const submitArgs = (output: string): string[] => ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id'];
  const submit = async (output: string): Promise<string> => {
    const result = await runEmbedq(world.env, submitArgs(output));
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  };
  const expectExactOutput = async (prefix: string): Promise<void> => {
    const { folder } = await downloadPrefix(world.s3, 'out', prefix);
    folders.push(folder);
    await verifyOutput(folder, corpus.expected, parameters, SHARD_ROWS);
  };
  /** Polls until a step named `name` of job `id` is active on the write queue; false if none came. */
  const waitForActiveStep = async (id: string, name: string, timeoutMs = 30_000): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const active = await world.services.queues[QUEUES.write].getActive();
      if (active.some((job) => job.name === name && job.id?.startsWith(`${id}-`))) return true;
      const record = await world.services.corpora.get(id);
      if (record?.state === 'completed') return false;
      await sleep(5);
    }
    return false;
  };

  /** Stops a worker with SIGTERM, as a scale-down does; its exit code and how long its drain took. */
  const drain = async (worker: ReturnType<typeof spawnEmbedq>): Promise<{ code: number | null; ms: number }> => {
    const exited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
    const signalled = Date.now();
    worker.kill('SIGTERM');
    const code = await exited;
    return { code, ms: Date.now() - signalled };
  };
  /** A second worker takes job `id` over and finishes it. */
  const anotherWorkerFinishes = async (id: string): Promise<void> => {
    const second = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
    try {
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
    } finally {
      await stopProcess(second, 'SIGKILL');
    }
  };

  beforeAll(async () => {
    redis = await startPrivateRedis({ appendOnly: true });
    world = await startWorld({ seed: 11, faults: { latencyMs: { min: 20, median: 40, p99: 80 } } }, { REDIS_URL: redis.url });
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(async () => {
    await world.close();
    await redis.stop();
    for (const folder of folders) await removeFolder(folder);
  });

  it('Redis SIGKILLed mid-run and restarted from its AOF: the job finishes with exact output', async () => {
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '4']);
    try {
      const id = await submit('s3://out/redis-kill/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 8);
      await redis.kill('SIGKILL');
      await sleep(500);
      await redis.restart();
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
    await expectExactOutput('redis-kill/');
  });

  it('Redis down for 6 s: a worker logs the loss once and the return once, with no stack per reconnection attempt', async () => {
    const worker = spawnEmbedq({ ...world.env, LOG_LEVEL: 'info' }, ['worker', '--concurrency', '4']);
    let output = '';
    worker.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      await expect.poll(() => output, { timeout: 30_000 }).toContain('workers started');
      const before = output.length;
      await redis.kill('SIGKILL');
      await sleep(6_000);
      await redis.restart();
      await expect.poll(() => output.slice(before), { timeout: 20_000 }).toContain('Redis is reachable again');
      const lines = output.slice(before).trim().split('\n').filter((line) => !line.includes('"msg":"memory"'));
      // Before: ~170 lines (`worker error`, `queue error`: connect ECONNREFUSED with its stack).
      expect(lines.filter((line) => line.includes('"code":"REDIS_UNAVAILABLE"')), lines.join('\n')).toHaveLength(1);
      expect(lines.length, lines.join('\n')).toBeLessThanOrEqual(3);
      expect(output.slice(before)).not.toContain('"stack"');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
  });

  it('FLUSHALL mid-run: --wait reports the lost job, workers survive, and the next job succeeds', async () => {
    world.emulator.setFaults({ latencyMs: { min: 100, median: 150, p99: 200 } });
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '4']);
    try {
      const waiting = spawnEmbedq(world.env, [...submitArgs('s3://out/flushed/'), '--wait']);
      let stdout = '';
      let stderr = '';
      waiting.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      waiting.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => waiting.once('exit', (code) => resolve(code)));
      const deadline = Date.now() + 20_000;
      while (!/cj-\S+/.test(stdout) && Date.now() < deadline) await sleep(50);
      const id = /cj-\S+/.exec(stdout)![0];
      await waitForJob(world.services, id, (record) => record.batchesDone >= 4);
      await world.services.redis.flushall();
      expect(await exited).toBe(1);
      expect(stderr).toContain(`JOB_LOST: job ${id} no longer exists in Redis`);
      expect(worker.exitCode).toBeNull();
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      // The lease went with the flush; the old run's files may be there: --overwrite.
      const next = await runEmbedq(world.env, [...submitArgs('s3://out/flushed/'), '--overwrite']);
      expect(next.code, next.stderr).toBe(0);
      const record = await waitForJob(world.services, next.stdout.trim(), undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
    await expectExactOutput('flushed/');
  });

  it('S3 stops answering for 5 s mid-run (a MinIO restart): the steps it failed retry, and the output is exact', async () => {
    world.emulator.setFaults({ latencyMs: { min: 100, median: 150, p99: 200 } });
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '4']);
    try {
      const id = await submit('s3://out/s3-outage/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 4);
      await world.s3.outage(5_000);
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
      // The outage met a step (or this test would show nothing): the last failure retried was the store's.
      expect(record.lastRetry).toMatch(/STORAGE_UNAVAILABLE: .*ECONNREFUSED/);
    } finally {
      await stopProcess(worker, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
    }
    await expectExactOutput('s3-outage/');
  });

  it('a worker stopped (SIGTERM) while its split waits for room drains at once; the next worker resumes the split: exact output', async () => {
    // Slow requests, so the split is still waiting for room (2 open shards of 6) when the signal comes.
    world.emulator.setFaults({ latencyMs: { min: 300, median: 400, p99: 500 } });
    const first = spawnEmbedq({ ...world.env, LOG_LEVEL: 'info' }, ['worker', '--concurrency', '2']);
    let logs = '';
    first.stdout?.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    try {
      const id = await submit('s3://out/drain-split/');
      const before = await waitForJob(world.services, id, (record) => record.batchesDone >= 2);
      expect(before.totalLines, 'the split is still running').toBeNull();
      const drained = await drain(first);
      // Before: the split held the drain until its 60-s bound, and the worker exited 1.
      expect(drained.code).toBe(0);
      expect(drained.ms).toBeLessThan(15_000);
      expect(logs).toContain('job handed back: this worker is stopping');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      await anotherWorkerFinishes(id);
    } finally {
      await stopProcess(first, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
    }
    await expectExactOutput('drain-split/');
  });

  it('a worker stopped (SIGTERM) with requests queued for rate-gate slots drains at once; they go to the next worker: exact output', async () => {
    // 20 a minute: a slot every 3 s, so most of the 8 embed steps wait in the gate's queue.
    const first = spawnEmbedq({ ...world.env, EMBEDQ_QPM: '20', LOG_LEVEL: 'info' }, ['worker', '--concurrency', '8']);
    let logs = '';
    first.stdout?.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    try {
      const id = await submit('s3://out/drain-gate/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 1);
      const drained = await drain(first);
      expect(drained.code).toBe(0);
      // Before: the queued steps, served a slot at a time, held the drain to its 60-s bound (exit 1).
      expect(drained.ms).toBeLessThan(8_000);
      expect(logs).toContain('job handed back: this worker is stopping');
      await anotherWorkerFinishes(id);
    } finally {
      await stopProcess(first, 'SIGKILL');
    }
    await expectExactOutput('drain-gate/');
  });

  it('a worker stopped (SIGSTOP) past its lock, then resumed: another worker finishes, exact output, and the resumed one logs no stack', async () => {
    // A 2 s lock: the stopped worker's steps are taken over within seconds.
    const env = { ...world.env, LOG_LEVEL: 'info', EMBEDQ_LOCK_DURATION_MS: '2000', EMBEDQ_STALLED_INTERVAL_MS: '1000' };
    world.emulator.setFaults({ latencyMs: { min: 150, median: 200, p99: 250 } });
    const stopped = spawnEmbedq(env, ['worker', '--concurrency', '4']);
    let output = '';
    stopped.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const other = spawnEmbedq(env, ['worker', '--concurrency', '4']);
    try {
      await expect.poll(() => output, { timeout: 30_000 }).toContain('workers started');
      const id = await submit('s3://out/sigstop/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 2);
      stopped.kill('SIGSTOP');
      await sleep(5_000);
      stopped.kill('SIGCONT');
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
      await sleep(3_000); // the resumed worker's lock renewals and moves fail meanwhile
      // Before: `worker error` with BullMQ's stack for each ("could not renew lock for job …",
      // "Missing lock for job … moveToFinished").
      expect(output).not.toContain('"stack"');
    } finally {
      await stopProcess(stopped, 'SIGKILL');
      await stopProcess(other, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
    }
    await expectExactOutput('sigstop/');
  });

  it('status names the steps a killed worker still holds once their lock runs out (the job sat ~30 s without a sign), and none while a live worker holds them', async () => {
    // Slow answers: the worker's embed steps are active, waiting for them, when it is killed.
    world.emulator.setFaults({ latencyMs: { min: 3_000, median: 3_500, p99: 4_000 } });
    const worker = spawnEmbedq({ ...world.env, EMBEDQ_LOCK_DURATION_MS: '2000' }, ['worker', '--concurrency', '4']);
    let id = '';
    try {
      id = await submit('s3://out/orphaned/');
      const embed = world.services.queues[embedQueue('text-embedding-v4')];
      const ownActive = async (): Promise<number> => (await embed.getRanges(['active'], 0, -1)).filter((step) => stepOwner(step)?.corpusJobId === id).length;
      await expect.poll(ownActive, { timeout: 30_000 }).toBeGreaterThan(0);
      // The dashboard reads the same: its job view counts the held steps.
      const dashboard = new DashboardState(world.services, { rates: gateRates(world.services), schedules: storedSchedules(world.services) });
      const stalledOnDashboard = async (): Promise<number | undefined> => (await dashboard.refresh()).jobs.find((job) => job.id === id)?.stalledSteps;
      expect((await runEmbedq(world.env, ['status', id])).stdout).not.toContain('stalled');
      expect(await stalledOnDashboard()).toBe(0);
      await stopProcess(worker, 'SIGKILL');
      await sleep(3_000); // past the 2 s lock; no worker runs a stalled check
      const status = await runEmbedq(world.env, ['status', id]);
      expect(status.stdout).toMatch(/^stalled {3}(1 step of the job is|\d+ steps of the job are) held by a worker that stopped \(killed, or frozen past EMBEDQ_LOCK_DURATION_MS\): a live worker takes (it|them) back at its next stalled check/m);
      // No live worker moves them meanwhile: the same count as status's.
      const counted = /^stalled {3}(?:(1) step|(\d+) steps)/m.exec(status.stdout)!;
      expect(await stalledOnDashboard()).toBe(Number(counted[1] ?? counted[2]));
    } finally {
      await stopProcess(worker, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      if (id) await runEmbedq(world.env, ['cancel', id]);
    }
  });

  it('a worker SIGKILLed during write-shard, then another during finalize: exact output', async () => {
    for (const [step, output] of [
      [JOB_NAMES.writeShard, 'kill-write/'],
      [JOB_NAMES.finalizeJob, 'kill-finalize/'],
    ] as const) {
      const first = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
      try {
        const id = await submit(`s3://out/${output}`);
        expect(await waitForActiveStep(id, step), `${step} seen active`).toBe(true);
        await stopProcess(first, 'SIGKILL');
        await anotherWorkerFinishes(id);
      } finally {
        await stopProcess(first, 'SIGKILL');
      }
      await expectExactOutput(output);
    }
  });

  it('cancel then retry under load, with generation-0 steps still queued: exact output', async () => {
    world.emulator.setFaults({ latencyMs: { min: 300, median: 400, p99: 500 } });
    // Every shard open at once, so plenty of generation-0 steps are queued when the cancel comes.
    const worker = spawnEmbedq({ ...world.env, EMBEDQ_MAX_OPEN_SHARDS: '20' }, ['worker', '--concurrency', '2']);
    try {
      const id = await submit('s3://out/cancel-retry/');
      await waitForJob(world.services, id, (record) => record.batchesDone >= 3);
      // Back to back, as a script would: the generation-0 steps are still queued when generation 1 starts.
      const { corpora, queues } = world.services;
      expect(await cancelCorpusJob(corpora, id)).toEqual({ cancelled: true });
      const retried = await retryCorpusJob({ corpora, splitQueue: queues[QUEUES.split], s3: () => world.services.s3() }, id);
      expect(retried).toMatchObject({ retried: true, generation: 1 });
      const stale = (await queues[embedQueue('text-embedding-v4')].getJobs(['waiting', 'prioritized'], 0, -1)).filter((job) => job.id?.startsWith(`${id}-g0-`));
      expect(stale.length).toBeGreaterThan(0);
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      const record = await waitForJob(world.services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
      expect(record.generation).toBe(1);
    } finally {
      await stopProcess(worker, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
    }
    await expectExactOutput('cancel-retry/');
  });
});
