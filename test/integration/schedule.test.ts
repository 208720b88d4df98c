import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { CorpusJobRecord } from '../../jobs/corpus-store.js';
import { newCorpusJobId } from '../../jobs/enqueue.js';
import { embedQueue as embedQueueName, JOB_NAMES, QUEUES } from '../../jobs/queues.js';
import { nextTick, removeScheduler, ScheduleStore } from '../../jobs/schedule-store.js';
import { sleep } from '../../src/sleep.js';
import { publishScheduleLatest } from '../../workers/schedule-outcome.js';
import { scheduleTickProcessor } from '../../workers/schedule-tick.js';
import { runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * Schedules end to end: real Redis, s3rver, the emulator, and two `embedq worker` processes.
 * The emulator answers after 3 s, so a run outlasts the 2-second cron and the next tick overlaps.
 */
const LINES = 20;

describe('embedq schedule', () => {
  let world: World;
  let schedules: ScheduleStore;

  beforeAll(async () => {
    world = await startWorld({ faults: { latencyMs: { min: 3_000, median: 3_000, p99: 3_000 } } });
    schedules = new ScheduleStore(world.services.redis, world.settings.redisPrefix);
    await world.put('daily/corpus.txt', Array.from({ length: LINES }, (_, i) => `line ${i} of the nightly corpus`).join('\n'));
  });
  afterAll(async () => {
    await world?.close();
  });

  it('refuses a bad cron expression, zone or placeholder at add, with the reason', async () => {
    const add = (extra: string[]) =>
      runEmbedq(world.env, ['schedule', 'add', 'bad', 's3://corpus/daily/corpus.txt', '--out', 's3://out/bad/{date}/', '--dimension', '64', ...extra]);
    const range = await add(['--cron', '61 * * * *']);
    expect(range.code).toBe(2);
    expect(range.stderr).toMatch(/--cron "61 \* \* \* \*": .*59/);
    const fields = await add(['--cron', '* * *']);
    expect(fields.code).toBe(2);
    expect(fields.stderr).toContain('expected 5 fields');
    // Before, accepted: BullMQ drew the minute anew at every tick, so it ran up to 3 times an hour.
    const hashed = await add(['--cron', 'H * * * *']);
    expect(hashed.code).toBe(2);
    expect(hashed.stderr).toContain('--cron "H * * * *": "H" (a hashed value) is not supported');
    const zone = await add(['--cron', '0 3 * * *', '--tz', 'Mars/Olympus_Mons']);
    expect(zone.code).toBe(2);
    expect(zone.stderr).toContain('--tz "Mars/Olympus_Mons"');
    const placeholder = await runEmbedq(world.env, ['schedule', 'add', 'bad', 's3://corpus/daily/corpus.txt', '--cron', '0 3 * * *', '--out', 's3://out/bad/{day}/']);
    expect(placeholder.code).toBe(2);
    expect(placeholder.stderr).toContain('unknown placeholder "{day}"');
    const incremental = await runEmbedq(world.env, ['schedule', 'add', 'bad', 's3://corpus/daily/corpus.txt', '--cron', '0 3 * * *', '--out', 's3://out/bad/', '--incremental']);
    expect(incremental.code).toBe(2);
    expect(incremental.stderr).toContain('--incremental needs a placeholder in --out');
    expect(await schedules.get('bad')).toBeUndefined();
  });

  it('refuses a placeholder in the bucket name at add: the root, where _latest.json goes, would be "s3://"', async () => {
    for (const extra of [[], ['--incremental']]) {
      const added = await runEmbedq(world.env, ['schedule', 'add', 'bucketdate', 's3://corpus/daily/corpus.txt', '--cron', '0 3 * * *', '--out', 's3://vec-{date}/x/', '--dimension', '64', ...extra]);
      // Before, it was added; each run embedded everything, then failed on `invalid location "s3://"`.
      expect(added.code).toBe(2);
      expect(added.stderr).toContain('--out "s3://vec-{date}/x/": a placeholder may not appear in the bucket name');
    }
    expect(await schedules.get('bucketdate')).toBeUndefined();
  });

  it('add of an existing name updates it and says so; a run whose stored options no longer validate fails clearly', async () => {
    const args = ['schedule', 'add', 'upsert', 's3://corpus/daily/corpus.txt', '--cron', '0 3 * * *', '--tz', 'Asia/Shanghai', '--out', 's3://out/upsert/{date}/'];
    const first = await runEmbedq(world.env, [...args, '--dimension', '64']);
    expect(first.stdout).toMatch(/^added schedule upsert; next run \d{4}-\d\d-\d\dT19:00:00\.000Z/);
    const second = await runEmbedq(world.env, [...args, '--dimension', '128']);
    expect(second.stdout).toMatch(/^updated schedule upsert/);
    expect((await schedules.get('upsert'))?.options.dimension).toBe(128);

    // What a stored record looks like after an upgrade that dropped a dimension.
    const key = `${world.settings.redisPrefix}:schedule:upsert`;
    const definition = JSON.parse((await world.services.redis.hget(key, 'definition'))!) as { options: Record<string, unknown> };
    definition.options.dimension = 999;
    await world.services.redis.hset(key, 'definition', JSON.stringify(definition));
    const run = await runEmbedq(world.env, ['schedule', 'run', 'upsert']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('999 is not allowed for text-embedding-v4');
    const list = JSON.parse((await runEmbedq(world.env, ['schedule', 'list', '--json'])).stdout) as Array<{ name: string; last_error: string; failures: number }>;
    const row = list.find((entry) => entry.name === 'upsert')!;
    expect(row.failures).toBe(1);
    expect(row.last_error).toMatch(/not started: Invalid options:[\s\S]*dimension[\s\S]*999 is not allowed/);

    const removed = await runEmbedq(world.env, ['schedule', 'remove', 'upsert']);
    expect(removed.code).toBe(0);
    expect(await schedules.get('upsert')).toBeUndefined();
  });

  // Santiago's clocks go from 00:00 (UTC-4) to 01:00 (UTC-3) on 2027-09-05: before, the tick came
  // on 2027-09-06T03:00:00.000Z and the day was lost. Lord Howe's go back half an hour at 02:00 on
  // 2027-04-04: before, cron-parser threw, BullMQ swallowed it and installed no scheduler. BullMQ
  // plans from startDate when it is later than now: as if the schedule were added then.
  it.each([
    ['a tick whose local time a DST change skips at midnight, for the first instant after the gap', 'santiago', '0 0 * * *', 'America/Santiago', '2027-09-04T12:00:00Z', '2027-09-05T04:00:00.000Z'],
    ['a daily Lord Howe tick after the April change, the next day (schedule-next-tick.ts)', 'lordhowe', '0 1 * * *', 'Australia/Lord_Howe', '2027-04-03T14:00:00.050Z', '2027-04-04T14:30:00.000Z'],
  ])('the Job Scheduler plans %s', async (_case, name, pattern, tz, startDate, next) => {
    const queue = world.services.queues[QUEUES.schedule];
    await queue.upsertJobScheduler(name, { pattern, tz, startDate: Date.parse(startDate) }, { name: JOB_NAMES.scheduleTick, data: { v: 1, schedule: name } });
    try {
      expect(new Date((await nextTick(queue, name))!).toISOString()).toBe(next);
    } finally {
      await removeScheduler(queue, name);
    }
  });

  it('schedule run takes the same single slot as a tick: refused while the previous run is active', async () => {
    const added = await runEmbedq(world.env, ['schedule', 'add', 'manual', 's3://corpus/daily/corpus.txt', '--cron', '0 0 1 1 *', '--out', 's3://out/manual/{runId}/', '--dimension', '64']);
    expect(added.code, added.stderr).toBe(0);
    const first = await runEmbedq(world.env, ['schedule', 'run', 'manual']);
    expect(first.code, first.stderr).toBe(0);
    const jobId = first.stdout.trim();
    expect((await world.services.corpora.get(jobId))).toMatchObject({ state: 'queued', schedule: 'manual', options: { output: `s3://out/manual/${jobId}/`, dimension: 64 } });
    const second = await runEmbedq(world.env, ['schedule', 'run', 'manual']);
    // Its own code (EX_TEMPFAIL), not a failure's 1: a cron wrapper tells "still going" from "failed".
    expect(second.code).toBe(75);
    expect(second.stderr).toContain(`previous run ${jobId} is still active; not started`);
    expect((await runEmbedq(world.env, ['cancel', jobId])).code).toBe(0);
    const third = await runEmbedq(world.env, ['schedule', 'run', 'manual']);
    expect(third.code, third.stderr).toBe(0);
    expect(third.stdout.trim()).not.toBe(jobId);
    expect((await runEmbedq(world.env, ['cancel', third.stdout.trim()])).code).toBe(0);
    expect((await runEmbedq(world.env, ['schedule', 'remove', 'manual'])).code).toBe(0);
  });

  it('two ticks of a 2-second cron with two workers: each once, distinct outputs, _latest.json names the second, the overlap skipped', async () => {
    const workers = [spawnEmbedq(world.env, ['worker']), spawnEmbedq(world.env, ['worker'])];
    try {
      const added = await runEmbedq(world.env, [
        'schedule', 'add', 'nightly', 's3://corpus/daily/corpus.txt',
        '--cron', '*/2 * * * * *', '--out', 's3://out/nightly/{date}/{time}-{runId}/',
        '--dimension', '64', '--output-type', 'dense', '--shard-rows', '10',
      ]);
      expect(added.code, added.stderr).toBe(0);
      const deadline = Date.now() + 40_000;
      while ((await schedules.get('nightly'))!.runs < 2) {
        if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(await schedules.get('nightly'))}`);
        await sleep(50);
      }
      // Stop ticking while the second run is still going (it takes 3 s or more); keep the record.
      await removeScheduler(world.services.queues[QUEUES.schedule], 'nightly');
      const jobs = (await world.services.corpora.list(100)).filter((record) => record.schedule === 'nightly').reverse();
      expect(jobs).toHaveLength(2);
      const done = await Promise.all(jobs.map((job) => waitForJob(world.services, job.id)));
      expect(done.map((record) => record.state)).toEqual(['completed', 'completed']);
      expect(new Set(jobs.map((job) => job.options.output)).size).toBe(2);
      for (const job of jobs) expect(job.options.output).toMatch(new RegExp(`^s3://out/nightly/\\d{4}-\\d\\d-\\d\\d/\\d{6}-${job.id}/$`));

      // Each tick handled once: no tick time twice in the history, two runs, the overlap skipped.
      const ticks = await schedules.ticks('nightly');
      expect(new Set(ticks.map((tick) => tick.tickMillis)).size).toBe(ticks.length);
      for (const tick of ticks) expect(tick.tickMillis % 2_000).toBe(0);
      expect(ticks.filter((tick) => tick.outcome === 'submitted').map((tick) => tick.detail).reverse()).toEqual(jobs.map((job) => job.id));
      expect(ticks.filter((tick) => tick.outcome === 'skipped').length).toBeGreaterThanOrEqual(1);
      const listed = JSON.parse((await runEmbedq(world.env, ['schedule', 'list', '--json'])).stdout) as Array<Record<string, unknown>>;
      const row = listed.find((entry) => entry.name === 'nightly')!;
      expect(row.skipped).toBe(ticks.filter((tick) => tick.outcome === 'skipped').length);
      expect(row.runs).toBe(2);
      expect(row.last_run).toMatchObject({ job_id: jobs[1]!.id, state: 'completed', output: jobs[1]!.options.output });
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'nightly'])).code).toBe(0);

      const latest = JSON.parse(
        await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'nightly/_latest.json' }))).Body!.transformToString(),
      ) as { output: string; job_id: string; finished_at: string; counts: { lines: number; embedded: number } };
      expect(latest.job_id).toBe(jobs[1]!.id);
      expect(latest.output).toBe(jobs[1]!.options.output);
      expect(latest.counts).toMatchObject({ lines: LINES, embedded: LINES });
      expect(Date.parse(latest.finished_at)).toBeGreaterThan(jobs[1]!.createdAt);
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
  });

  it('--on-overlap queue: an overlapping tick waits for the run, then runs; a template without placeholder re-runs into the same output', async () => {
    const workers = [spawnEmbedq(world.env, ['worker']), spawnEmbedq(world.env, ['worker'])];
    try {
      const added = await runEmbedq(world.env, [
        'schedule', 'add', 'fixed', 's3://corpus/daily/corpus.txt', '--cron', '*/2 * * * * *', '--on-overlap', 'queue',
        '--out', 's3://out/fixed/', '--dimension', '64', '--output-type', 'dense', '--shard-rows', '10',
      ]);
      expect(added.code, added.stderr).toBe(0);
      const deadline = Date.now() + 40_000;
      while ((await schedules.get('fixed'))!.runs < 2) {
        if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(await schedules.get('fixed'))}`);
        await sleep(50);
      }
      await removeScheduler(world.services.queues[QUEUES.schedule], 'fixed');
      const ticks = await schedules.ticks('fixed');
      const jobs = (await world.services.corpora.list(100)).filter((record) => record.schedule === 'fixed').reverse();
      expect(jobs).toHaveLength(2);
      const [first, second] = await Promise.all(jobs.map((job) => waitForJob(world.services, job.id)));
      expect([first!.state, second!.state]).toEqual(['completed', 'completed']);
      expect([first!.options.output, second!.options.output]).toEqual(['s3://out/fixed/', 's3://out/fixed/']);
      // Never two writers: the queued tick started its run only after the first had finished.
      expect(second!.createdAt).toBeGreaterThanOrEqual(first!.finishedAt!);
      const queued = ticks.filter((tick) => tick.outcome === 'queued');
      expect(queued).toHaveLength(1);
      const submittedTicks = ticks.filter((tick) => tick.outcome === 'submitted');
      expect(submittedTicks[0]).toMatchObject({ tickMillis: queued[0]!.tickMillis, detail: second!.id });
      // Later overlapping ticks were skipped while one tick was already waiting.
      expect(ticks.filter((tick) => tick.outcome === 'skipped').every((tick) => tick.detail.includes('a tick already queued'))).toBe(true);
      const latest = JSON.parse(
        await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'fixed/_latest.json' }))).Body!.transformToString(),
      ) as { job_id: string; output: string };
      expect(latest).toMatchObject({ job_id: second!.id, output: 's3://out/fixed/' });
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'fixed'])).code).toBe(0);
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
  });

  it('a run cancelled while a step of it still writes (its worker paused) is a run still going for the next tick, not a failed run: skip skips, queue waits and runs once the step stopped', async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    const flags = ['s3://corpus/daily/corpus.txt', '--cron', '0 0 1 1 *', '--out', 's3://out/stopping/', '--dimension', '64', '--output-type', 'dense', '--shard-rows', '10'];
    const tick = async (tickMillis: number): Promise<void> =>
      scheduleTickProcessor(world.services)({ data: { v: 1, schedule: 'stopping' }, opts: { prevMillis: tickMillis }, timestamp: tickMillis, queueName: QUEUES.schedule, name: JOB_NAMES.scheduleTick, id: `tick-${tickMillis}` } as unknown as Job);
    let paused = false;
    try {
      expect((await runEmbedq(world.env, ['schedule', 'add', 'stopping', ...flags, '--on-overlap', 'skip'])).code).toBe(0);
      const started = await runEmbedq(world.env, ['schedule', 'run', 'stopping']);
      expect(started.code, started.stderr).toBe(0);
      const jobId = started.stdout.trim();
      // An embed step in flight (the emulator answers after 3 s), then the worker paused: it cannot see the cancel.
      const steps = world.services.queues[embedQueueName('text-embedding-v4')];
      const deadline = Date.now() + 30_000;
      while (!(await steps.getRanges(['active'], 0, -1)).some((id) => id.includes(jobId))) {
        if (Date.now() > deadline) throw new Error('no embed step of the run became active');
        await sleep(50);
      }
      worker.kill('SIGSTOP');
      paused = true;
      const cancelled = await runEmbedq(world.env, ['cancel', jobId]);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      expect(await world.services.corpora.leases.holder('s3://out/stopping/')).toEqual({ jobId, ending: true });

      // Before, each of these counted a failed run ("not started: … stopped moments ago"), and a waiting tick was lost.
      const first = Date.now();
      await tick(first);
      expect((await schedules.ticks('stopping'))[0]).toMatchObject({ tickMillis: first, outcome: 'skipped', detail: expect.stringContaining(`run ${jobId} stopped moments ago`) });
      const manual = await runEmbedq(world.env, ['schedule', 'run', 'stopping']);
      expect(manual.code).toBe(75);
      expect(manual.stderr).toContain(`run ${jobId} stopped moments ago`);
      expect((await runEmbedq(world.env, ['schedule', 'add', 'stopping', ...flags, '--on-overlap', 'queue'])).code).toBe(0);
      await tick(first + 1_000);
      expect(await schedules.queuedTick('stopping')).toBe(first + 1_000);
      expect(await schedules.get('stopping')).toMatchObject({ failures: 0, runs: 1 });

      // The worker resumes, sees the cancel and stops the step: the waiting tick gives the lease back and runs, well within the lease's minute.
      worker.kill('SIGCONT');
      paused = false;
      while ((await schedules.get('stopping'))!.runs < 2) {
        if (Date.now() > deadline + 15_000) throw new Error(`the waiting tick did not run: ${JSON.stringify(await schedules.get('stopping'))}`);
        await sleep(100);
      }
      const next = (await world.services.corpora.list(100)).find((record) => record.schedule === 'stopping' && record.id !== jobId)!;
      expect(await waitForJob(world.services, next.id)).toMatchObject({ state: 'completed', rowsEmbedded: LINES });
      expect(await schedules.get('stopping')).toMatchObject({ failures: 0, runs: 2 });
      expect((await schedules.ticks('stopping')).find((entry) => entry.outcome === 'submitted')).toMatchObject({ tickMillis: first + 1_000, detail: next.id });
    } finally {
      if (paused) worker.kill('SIGCONT');
      await runEmbedq(world.env, ['schedule', 'remove', 'stopping']);
      await stopProcess(worker);
    }
  });

  it('--on-overlap changed from queue to skip while a tick waits: the waiting tick goes with the change, and later ticks run (they were skipped for a day)', async () => {
    const workers = [spawnEmbedq(world.env, ['worker'])];
    const flags = ['s3://corpus/daily/corpus.txt', '--cron', '*/2 * * * * *', '--out', 's3://out/switch/{runId}/', '--dimension', '64', '--output-type', 'dense', '--shard-rows', '10'];
    try {
      expect((await runEmbedq(world.env, ['schedule', 'add', 'switch', ...flags, '--on-overlap', 'queue'])).code).toBe(0);
      const deadline = Date.now() + 40_000;
      while ((await schedules.queuedTick('switch')) === null) {
        if (Date.now() > deadline) throw new Error(`no tick queued: ${JSON.stringify(await schedules.get('switch'))}`);
        await sleep(50);
      }
      const changed = await runEmbedq(world.env, ['schedule', 'add', 'switch', ...flags, '--on-overlap', 'skip']);
      expect(changed.code, changed.stderr).toBe(0);
      // Gone with the change, not at the waiting tick's next poll; and no tick queues after it.
      expect(await schedules.queuedTick('switch')).toBeNull();
      while ((await schedules.get('switch'))!.runs < 2) {
        if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(await schedules.get('switch'))}, queued tick ${await schedules.queuedTick('switch')}`);
        await sleep(50);
      }
      await removeScheduler(world.services.queues[QUEUES.schedule], 'switch');
      expect(await schedules.queuedTick('switch')).toBeNull();
      const ticks = await schedules.ticks('switch');
      expect(ticks.filter((tick) => tick.outcome === 'submitted')).toHaveLength(2);
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'switch'])).code).toBe(0);
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
  });

  it('a tick queues only while the schedule, as stored when it queues, says --on-overlap queue: one that read it before a change to skip is skipped', async () => {
    const definition = { name: 'requeue', cron: '0 0 1 1 *', tz: 'UTC', input: 's3://corpus/x.txt', out: 's3://out/requeue/{runId}/', options: {}, incremental: false };
    await schedules.upsert({ ...definition, onOverlap: 'queue' });
    expect(await schedules.queueTick('requeue', 1_000, 'cj-active')).toBe('queued');
    expect(await schedules.queueTick('requeue', 2_000, 'cj-active')).toBe('taken');
    await schedules.upsert({ ...definition, onOverlap: 'skip' });
    expect(await schedules.queuedTick('requeue')).toBeNull();
    expect(await schedules.queueTick('requeue', 3_000, 'cj-active')).toBe('not-queueing');
    expect(await schedules.queuedTick('requeue')).toBeNull();
    await schedules.remove('requeue');
    expect(await schedules.queueTick('requeue', 4_000, 'cj-active')).toBe('not-queueing');
  });

  it('a re-queued tick whose place was given up meanwhile (changed to skip and back to queue) is skipped, not queued again beside a later one', async () => {
    const definition = { name: 'regiven', cron: '0 0 1 1 *', tz: 'UTC', input: 's3://corpus/x.txt', out: 's3://out/regiven/{runId}/', options: {}, incremental: false };
    await schedules.upsert({ ...definition, onOverlap: 'queue' });
    // A run still active: a claim within its grace, before its record exists.
    const active = newCorpusJobId(Date.now());
    await world.services.redis.hset(`${world.settings.redisPrefix}:schedule:regiven`, { current: active, claimedAt: Date.now() });
    const tick = Date.now() - 5_000;
    expect(await schedules.queueTick('regiven', tick, active)).toBe('queued');
    await schedules.upsert({ ...definition, onOverlap: 'skip' });
    await schedules.upsert({ ...definition, onOverlap: 'queue' });
    const later = tick + 1_000;
    expect(await schedules.queueTick('regiven', later, active)).toBe('queued');

    const queue = world.services.queues[QUEUES.schedule];
    const requeuedBefore = (await queue.getJobs(['delayed', 'waiting'])).filter((job) => job.id?.startsWith('queued-regiven-')).length;
    const scheduleCreatedAt = (await schedules.get('regiven'))!.createdAt;
    await scheduleTickProcessor(world.services)({ data: { v: 1, schedule: 'regiven', tickMillis: tick, scheduleCreatedAt }, opts: {}, timestamp: tick, queueName: QUEUES.schedule, name: JOB_NAMES.scheduleTick, id: 'requeued' } as unknown as Job);
    // Before, it put itself back on the queue, and both ticks waited for the run.
    expect((await queue.getJobs(['delayed', 'waiting'])).filter((job) => job.id?.startsWith('queued-regiven-'))).toHaveLength(requeuedBefore);
    expect(await schedules.queuedTick('regiven')).toBe(later);
    expect((await schedules.ticks('regiven'))[0]).toMatchObject({ tickMillis: tick, outcome: 'skipped', detail: `previous run ${active} still active` });
    await schedules.remove('regiven');
  });

  it('a tick waiting on a schedule that was removed runs on no schedule, not on one added anew under its name', async () => {
    const definition = { name: 'gone', cron: '*/5 * * * * *', tz: 'UTC', input: 's3://corpus/daily/corpus.txt', out: 's3://out/gone/{runId}/', options: { dimension: 64 }, incremental: false, onOverlap: 'queue' as const };
    const key = `${world.settings.redisPrefix}:schedule:gone`;
    // Queued by this version (the payload names the schedule's creation time) and by an older one.
    for (const carriesCreatedAt of [true, false]) {
      await schedules.upsert(definition);
      const active = newCorpusJobId(Date.now());
      await world.services.redis.hset(key, { current: active, claimedAt: Date.now() });
      const tick = Date.now() - 5_000;
      expect(await schedules.queueTick('gone', tick, active)).toBe('queued');
      const createdAt = (await schedules.get('gone'))!.createdAt;
      await schedules.remove('gone');
      await sleep(5);
      await schedules.upsert({ ...definition, cron: '0 0 1 1 *' });

      const payload = { v: 1, schedule: 'gone', tickMillis: tick, ...(carriesCreatedAt ? { scheduleCreatedAt: createdAt } : {}) };
      await scheduleTickProcessor(world.services)({ data: payload, opts: {}, timestamp: tick, queueName: QUEUES.schedule, name: JOB_NAMES.scheduleTick, id: 'requeued' } as unknown as Job);
      // Before, it claimed the new schedule's empty slot and submitted a run beside the removed one's.
      expect(await world.services.redis.hget(key, 'current')).toBeNull();
      expect((await schedules.get('gone'))!.runs).toBe(0);
      expect(await schedules.ticks('gone')).toEqual([]);
      expect((await world.services.corpora.list(100)).filter((record) => record.schedule === 'gone')).toEqual([]);
      await schedules.remove('gone');
    }
  });

  it('ticks due while no worker ran are counted as missed, logged and listed (the next ran late, the others vanished without a word)', async () => {
    const flags = ['s3://corpus/daily/corpus.txt', '--cron', '* * * * * *', '--out', 's3://out/missed/{runId}/', '--dimension', '64', '--output-type', 'dense'];
    expect((await runEmbedq(world.env, ['schedule', 'add', 'missed', ...flags])).code).toBe(0);
    await sleep(4_000); // no worker: the first tick waits, the ones after it never come
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await expect.poll(async () => (await schedules.get('missed'))!.runs, { timeout: 30_000 }).toBeGreaterThanOrEqual(1);
      const { missed } = (await schedules.get('missed'))!;
      expect(missed).toBeGreaterThanOrEqual(2);
      const log = (await schedules.ticks('missed')).filter((tick) => tick.outcome === 'missed');
      expect(log).toHaveLength(1);
      expect(log[0]!.detail).toMatch(new RegExp(`^${missed} ticks after this one, to \\d{4}-\\d\\d-\\d\\dT\\S+Z, never came: no worker ran then$`));
      expect((await runEmbedq(world.env, ['schedule', 'list'])).stdout).toContain(`missed ${missed}  failures 0`);
      // With the worker running, the ticks that follow come (run or skipped): none more is missed.
      await sleep(3_000);
      expect((await schedules.get('missed'))!.missed).toBe(missed);
    } finally {
      await removeScheduler(world.services.queues[QUEUES.schedule], 'missed');
      for (const record of (await world.services.corpora.list(100)).filter((job) => job.schedule === 'missed')) await runEmbedq(world.env, ['cancel', record.id]);
      await runEmbedq(world.env, ['schedule', 'remove', 'missed']);
      await stopProcess(worker);
    }
  });

  it('pause holds the ticks (each logged, none starts a run) and resume lets them run again; schedule run still runs while paused', async () => {
    const flags = ['s3://corpus/daily/corpus.txt', '--cron', '* * * * * *', '--out', 's3://out/held/{runId}/', '--dimension', '64', '--output-type', 'dense'];
    expect((await runEmbedq(world.env, ['schedule', 'add', 'held', ...flags])).code).toBe(0);
    const paused = await runEmbedq(world.env, ['schedule', 'pause', 'held']);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stderr).toBe('paused schedule held\n');
    expect((await runEmbedq(world.env, ['schedule', 'pause', 'held'])).stderr).toBe('schedule held was already paused\n');
    const missing = await runEmbedq(world.env, ['schedule', 'pause', 'nope']);
    expect([missing.code, missing.stderr]).toEqual([1, 'no schedule nope\n']);
    expect(await world.services.redis.exists(`${world.settings.redisPrefix}:schedule:nope`)).toBe(0);

    const workers = [spawnEmbedq(world.env, ['worker'])];
    try {
      const deadline = Date.now() + 30_000;
      while ((await schedules.ticks('held')).length < 3) {
        if (Date.now() > deadline) throw new Error(`no ticks: ${JSON.stringify(await schedules.get('held'))}`);
        await sleep(50);
      }
      expect((await schedules.ticks('held')).every((tick) => tick.outcome === 'paused')).toBe(true);
      expect((await schedules.get('held'))!).toMatchObject({ runs: 0, skipped: 0 });
      expect((await world.services.corpora.list(100)).filter((record) => record.schedule === 'held')).toHaveLength(0);
      const listed = (JSON.parse((await runEmbedq(world.env, ['schedule', 'list', '--json'])).stdout) as Array<Record<string, unknown>>).find((row) => row.name === 'held')!;
      expect(listed.next_run).toBeNull();
      expect(Date.parse(listed.paused_at as string)).toBeGreaterThan(0);
      expect((await runEmbedq(world.env, ['schedule', 'list'])).stdout).toContain(`next none (paused since ${listed.paused_at as string})`);

      // An update keeps the pause, and says so.
      expect((await runEmbedq(world.env, ['schedule', 'add', 'held', ...flags])).stdout).toBe(`updated schedule held; next run none (paused since ${listed.paused_at as string})\n`);
      // An explicit run is the operator's own request: it starts.
      const manual = await runEmbedq(world.env, ['schedule', 'run', 'held']);
      expect(manual.code, manual.stderr).toBe(0);
      expect((await runEmbedq(world.env, ['cancel', manual.stdout.trim()])).code).toBe(0);

      const resumed = await runEmbedq(world.env, ['schedule', 'resume', 'held']);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stderr).toMatch(/^resumed schedule held; next run \d{4}-\d\d-\d\dT/);
      expect((await runEmbedq(world.env, ['schedule', 'resume', 'held'])).stderr).toMatch(/^schedule held was not paused; next run \d{4}-/);
      while ((await schedules.get('held'))!.runs < 2) {
        if (Date.now() > deadline) throw new Error(`no run after resume: ${JSON.stringify(await schedules.get('held'))}`);
        await sleep(50);
      }
      await removeScheduler(world.services.queues[QUEUES.schedule], 'held');
      const ticks = await schedules.ticks('held');
      expect(ticks.filter((tick) => tick.outcome === 'submitted').length).toBeGreaterThanOrEqual(1);
      expect((await schedules.get('held'))!.pausedAt).toBeNull();
      for (const record of (await world.services.corpora.list(100)).filter((job) => job.schedule === 'held' && job.state !== 'cancelled')) {
        await runEmbedq(world.env, ['cancel', record.id]);
      }
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'held'])).code).toBe(0);
    } finally {
      await Promise.all(workers.map((worker) => stopProcess(worker)));
    }
  });

  it("refuses names that are BullMQ's keys of the schedule queue; remove, pause and run of one touch none of them, and another schedule ticks on", async () => {
    const { redis } = world.services;
    const prefix = world.settings.redisPrefix;
    const flags = ['s3://corpus/daily/corpus.txt', '--cron', '* * * * * *', '--dimension', '64', '--output-type', 'dense'];
    expect((await runEmbedq(world.env, ['schedule', 'add', 'ticker', ...flags, '--out', 's3://out/ticker/{runId}/'])).code).toBe(0);
    // Paused, its ticks start no run; each is logged.
    expect((await runEmbedq(world.env, ['schedule', 'pause', 'ticker'])).code).toBe(0);
    const ticksReach = async (count: number): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while ((await schedules.ticks('ticker')).length < count) {
        if (Date.now() > deadline) throw new Error(`ticker stopped ticking: ${JSON.stringify(await schedules.get('ticker'))}`);
        await sleep(50);
      }
    };
    const bullmqKeys = async () =>
      Object.fromEntries(await Promise.all(['wait', 'delayed', 'repeat', 'events', 'meta'].map(async (suffix) => [suffix, await redis.type(`${prefix}:schedule:${suffix}`)])));
    // The delayed set holds the next tick; while BullMQ moves one tick on (every second here) it can
    // be empty, so gone, for an instant, and the wait list hold it. A set a command deleted would
    // not come back (the Job Scheduler's next tick went with it).
    const expectBullmqKeysAsBefore = (before: Record<string, string>) => expect.poll(bullmqKeys, { timeout: 5_000 }).toEqual(before);
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await ticksReach(2);
      // Between ticks: none waiting, the next one delayed.
      const before = { wait: 'none', delayed: 'zset', repeat: 'zset', events: 'stream', meta: 'hash' };
      await expectBullmqKeysAsBefore(before);

      // Before, `add wait` replaced BullMQ's wait list with a hash (no schedule ticked again), and
      // `add delayed` failed with WRONGTYPE, leaving its name listed: every `schedule list` failed.
      const file = path.join(tmpdir(), `embedq-names-${prefix}.json`);
      const entry = { cron: '0 3 * * *', input: 's3://corpus/daily/corpus.txt', out: 's3://out/names-events/{date}/', options: { dimension: 64 } };
      await writeFile(file, JSON.stringify({ version: 1, schedules: [{ name: 'events', ...entry }] }));
      const [wait, digits, applied] = await Promise.all([
        ...['wait', '42'].map((name) => runEmbedq(world.env, ['schedule', 'add', name, ...flags, '--out', `s3://out/names-${name}/{runId}/`])),
        runEmbedq(world.env, ['schedule', 'apply', file]),
      ]);
      expect([wait!.code, digits!.code, applied!.code]).toEqual([2, 2, 2]);
      expect(wait!.stderr).toContain(`schedule name "wait": BullMQ keeps the schedule queue's "wait" (<prefix>:schedule:wait)`);
      expect(digits!.stderr).toContain('schedule name "42": digits only');
      expect(applied!.stderr).toContain(`- schedule events: schedule name "events": BullMQ keeps the schedule queue's "events"`);
      // Before, `remove delayed` deleted BullMQ's delayed set (every schedule's next tick), and
      // `remove repeat` would have deleted every Job Scheduler.
      const commands = [['remove', 'delayed'], ['pause', 'delayed'], ['run', 'wait'], ['remove', 'repeat']];
      const results = await Promise.all(commands.map((command) => runEmbedq(world.env, ['schedule', ...command])));
      expect(results.map((result) => [result.code, result.stderr])).toEqual(commands.map(([, name]) => [1, `no schedule ${name}\n`]));
      await expectBullmqKeysAsBefore(before);

      // A name an older version listed before its write failed: no schedule, and list and export
      // work; `apply --prune` unlists it and leaves BullMQ's key of that name alone.
      await redis.zadd(`${prefix}:schedules`, Date.now(), 'events');
      const listed = await runEmbedq(world.env, ['schedule', 'list', '--json']);
      expect(listed.code, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as Array<{ name: string }>).map((row) => row.name)).toEqual(['ticker']);
      const exported = await runEmbedq(world.env, ['schedule', 'export']);
      await writeFile(file, exported.stdout);
      const pruned = await runEmbedq(world.env, ['schedule', 'apply', file, '--prune']);
      expect(pruned.stdout).toBe('unchanged schedule ticker\nremoved schedule events\n');
      expect(await schedules.names()).toEqual(['ticker']);
      await expectBullmqKeysAsBefore(before);
      await rm(file);

      // A record that cannot be written leaves no name listed without it.
      await redis.set(`${prefix}:schedule:clash`, 'not a hash');
      await expect(schedules.upsert({ ...(await schedules.get('ticker'))!, name: 'clash' })).rejects.toThrow(/WRONGTYPE/);
      expect(await schedules.names()).toEqual(['ticker']);
      await redis.del(`${prefix}:schedule:clash`);

      await ticksReach((await schedules.ticks('ticker')).length + 2);
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'ticker'])).code).toBe(0);
    } finally {
      await stopProcess(worker);
    }
  });

  it('an older run retried after a newer one completed leaves _latest.json naming the newer', async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await world.put('order/corpus.txt', 'one line\nanother line\n');
      const added = await runEmbedq(world.env, ['schedule', 'add', 'order', 's3://corpus/order/corpus.txt', '--cron', '0 0 1 1 *', '--out', 's3://out/order/{runId}/', '--dimension', '64', '--output-type', 'dense']);
      expect(added.code, added.stderr).toBe(0);
      // Run A is cancelled mid-request (each answer takes 3 s here), run B completes, then A is retried.
      const older = (await runEmbedq(world.env, ['schedule', 'run', 'order'])).stdout.trim();
      await waitForJob(world.services, older, (record) => record.state === 'running');
      expect((await runEmbedq(world.env, ['cancel', older])).code).toBe(0);
      const newer = await runEmbedq(world.env, ['schedule', 'run', 'order', '--wait']);
      expect(newer.code, newer.stderr).toBe(0);
      const newerId = newer.stdout.trim();
      expect((await runEmbedq(world.env, ['retry', older])).code).toBe(0);
      expect((await waitForJob(world.services, older)).state).toBe('completed');
      const latest = JSON.parse(
        await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'order/_latest.json' }))).Body!.transformToString(),
      ) as { job_id: string; output: string };
      // Before, the older run, finishing last, moved it back: the next incremental run would have
      // built its delta on the older base.
      expect(latest).toMatchObject({ job_id: newerId, output: `s3://out/order/${newerId}/` });
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'order'])).code).toBe(0);
    } finally {
      await stopProcess(worker);
    }
  });

  it('an older and a newer run moving _latest.json at the same moment leave it naming the newer', async () => {
    await schedules.upsert({ name: 'race', cron: '0 0 1 1 *', tz: 'UTC', input: 's3://corpus/daily/corpus.txt', out: 's3://out/race/{runId}/', options: {}, incremental: false, onOverlap: 'skip' });
    const older = newCorpusJobId(Date.now() - 60_000);
    const newer = newCorpusJobId(Date.now());
    for (const id of [older, newer]) {
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: `race/${id}/_SUCCESS`, Body: '' }));
      const manifest = { job_id: id, finished_at: new Date().toISOString(), counts: { lines: 1, embedded: 1 } };
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: `race/${id}/_manifest.json`, Body: JSON.stringify(manifest) }));
    }
    const publish = (id: string) => publishScheduleLatest(world.services, { id, schedule: 'race', options: { output: `s3://out/race/${id}/` } } as CorpusJobRecord, world.services.logger);
    for (let round = 0; round < 5; round++) {
      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'out', Key: 'race/_latest.json' }));
      // The older run's retry finishing as the newer run does. Before, both found no newer run
      // named, both wrote, and the older's write, landing last, moved the pointer back.
      await Promise.all([publish(newer), publish(older)]);
      const latest = JSON.parse(await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'race/_latest.json' }))).Body!.transformToString()) as { job_id: string };
      expect(latest.job_id, `round ${round}`).toBe(newer);
    }
    await schedules.remove('race');
  });

  it("a run whose schedule's --out changed meanwhile writes no _latest.json into the new root", async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await world.put('moved/corpus.txt', 'one line\n');
      const add = (out: string) => runEmbedq(world.env, ['schedule', 'add', 'moved', 's3://corpus/moved/corpus.txt', '--cron', '0 0 1 1 *', '--out', out, '--dimension', '64', '--output-type', 'dense']);
      expect((await add('s3://out/moved-a/{runId}/')).code).toBe(0);
      const id = (await runEmbedq(world.env, ['schedule', 'run', 'moved'])).stdout.trim();
      await waitForJob(world.services, id, (record) => record.state === 'running');
      expect((await add('s3://out/moved-b/{runId}/')).code).toBe(0);
      expect((await waitForJob(world.services, id)).state).toBe('completed');
      // Before, s3://out/moved-b/_latest.json named s3://out/moved-a/<id>/.
      await expect(world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'moved-b/_latest.json' }))).rejects.toThrow();
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'moved'])).code).toBe(0);
    } finally {
      await stopProcess(worker);
    }
  });

  it('a failed run leaves _latest.json naming the last good output, and schedule list counts it and shows why until a run completes', async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await world.put('keeper/corpus.txt', 'one line\nanother line\n');
      const added = await runEmbedq(world.env, ['schedule', 'add', 'keeper', 's3://corpus/keeper/corpus.txt', '--cron', '0 0 1 1 *', '--out', 's3://out/keeper/{runId}/', '--dimension', '64', '--output-type', 'dense']);
      expect(added.code, added.stderr).toBe(0);
      const good = await runEmbedq(world.env, ['schedule', 'run', 'keeper', '--wait']);
      expect(good.code, good.stderr).toBe(0);
      const goodId = good.stdout.trim();
      const readLatest = async () =>
        JSON.parse(await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'keeper/_latest.json' }))).Body!.transformToString()) as { job_id: string; output: string };
      expect(await readLatest()).toMatchObject({ job_id: goodId, output: `s3://out/keeper/${goodId}/` });

      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: 'keeper/corpus.txt' }));
      const bad = await runEmbedq(world.env, ['schedule', 'run', 'keeper', '--wait']);
      expect(bad.code).toBe(1);
      const badId = bad.stdout.trim();
      expect((await world.services.corpora.get(badId))?.state).toBe('failed');
      expect(await readLatest()).toMatchObject({ job_id: goodId, output: `s3://out/keeper/${goodId}/` });
      type Row = { name: string; last_run: { job_id: string; state: string; error: string }; failures: number; last_error: string | null };
      const keeperRow = async (): Promise<Row> => (JSON.parse((await runEmbedq(world.env, ['schedule', 'list', '--json'])).stdout) as Row[]).find((entry) => entry.name === 'keeper')!;
      const row = await keeperRow();
      expect(row.last_run).toMatchObject({ job_id: badId, state: 'failed' });
      expect(row.last_run.error).toContain('keeper/corpus.txt');
      // The schedule counts the failed run and keeps why, beyond the next tick (before, only the
      // last run's state showed it, and failures counted only ticks that could not start a run).
      expect(row.failures).toBe(1);
      expect(row.last_error).toMatch(new RegExp(`^run ${badId} failed: [A-Z_]+: .*keeper/corpus\\.txt`));
      await world.put('keeper/corpus.txt', 'one line\nanother line\n');
      const next = await runEmbedq(world.env, ['schedule', 'run', 'keeper', '--wait']);
      expect(next.code, next.stderr).toBe(0);
      expect(await keeperRow()).toMatchObject({ failures: 1, last_error: null, last_run: { job_id: next.stdout.trim(), state: 'completed' } });
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'keeper'])).code).toBe(0);
    } finally {
      await stopProcess(worker);
    }
  });

  it('without placeholder, a run withdraws _latest.json as it empties the output: a failed one leaves no pointer to an emptied output', async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    try {
      await world.put('fx/corpus.txt', 'one line\nanother line\n');
      const added = await runEmbedq(world.env, ['schedule', 'add', 'fx', 's3://corpus/fx/corpus.txt', '--cron', '0 0 1 1 *', '--out', 's3://out/fx/', '--dimension', '64', '--output-type', 'dense']);
      expect(added.code, added.stderr).toBe(0);
      const readLatest = async (): Promise<{ job_id: string; output: string } | null> => {
        try {
          return JSON.parse(await (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'fx/_latest.json' }))).Body!.transformToString()) as { job_id: string; output: string };
        } catch (error) {
          if ((error as Error).name === 'NoSuchKey') return null;
          throw error;
        }
      };
      const good = await runEmbedq(world.env, ['schedule', 'run', 'fx', '--wait']);
      expect(good.code, good.stderr).toBe(0);
      expect(await readLatest()).toMatchObject({ job_id: good.stdout.trim(), output: 's3://out/fx/' });

      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: 'fx/corpus.txt' }));
      const bad = await runEmbedq(world.env, ['schedule', 'run', 'fx', '--wait']);
      expect(bad.code).toBe(1);
      // Before, it still named the first run, whose _SUCCESS and shards the overwrite had removed.
      expect(await readLatest()).toBeNull();

      await world.put('fx/corpus.txt', 'one line\nanother line\n');
      const next = await runEmbedq(world.env, ['schedule', 'run', 'fx', '--wait']);
      expect(next.code, next.stderr).toBe(0);
      expect(await readLatest()).toMatchObject({ job_id: next.stdout.trim(), output: 's3://out/fx/' });

      // A run by hand into the schedule's output (spelt without the final slash) withdraws the
      // pointer too: it was left naming the run it removed, beside the new run's manifest.
      const byHand = ['submit', 's3://corpus/fx/corpus.txt', '--out', 's3://out/fx', '--dimension', '64', '--output-type', 'dense', '--overwrite', '--wait'];
      const manual = await runEmbedq(world.env, byHand);
      expect(manual.code, manual.stderr).toBe(0);
      expect(await readLatest()).toBeNull();
      // A pointer naming another output (a root whose runs sit in folders below it) is not this
      // output's run: the root of a schedule's runs takes no run by hand (it was accepted, beside
      // them), and the pointer stays.
      const elsewhere = { output: 's3://out/fx/2026-12-01/', job_id: next.stdout.trim(), schedule: 'fx' };
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'fx/_latest.json', Body: JSON.stringify(elsewhere) }));
      const again = await runEmbedq(world.env, byHand);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain("embedq: OUTPUT_NOT_EMPTY: s3://out/fx is the root of schedule fx's runs (its _latest.json names s3://out/fx/2026-12-01/)");
      expect(await readLatest()).toMatchObject(elsewhere);
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'fx'])).code).toBe(0);
    } finally {
      await stopProcess(worker);
    }
  });
});
