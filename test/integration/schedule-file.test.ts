import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUES } from '../../jobs/queues.js';
import { nextTick, ScheduleStore } from '../../jobs/schedule-store.js';
import { sleep } from '../../src/sleep.js';
import { readScheduleFile, restoreLostSchedules } from '../../workers/schedule-file.js';
import { startWorkers } from '../../workers/start-workers.js';
import { runEmbedq, startWorld, type World } from '../support/world.js';

/**
 * Schedules live in Redis; a Redis restarted without persistence loses them, and the nightly
 * re-index silently stops. `schedule export` writes them to a file, `schedule apply` puts a file's
 * schedules in, and a worker given the file (EMBEDQ_SCHEDULES_FILE) puts back what Redis lost.
 */
describe('schedules file', () => {
  let world: World;
  let store: ScheduleStore;
  let folder: string;
  const add = (name: string, cron: string, extra: string[] = []) =>
    runEmbedq(world.env, ['schedule', 'add', name, 's3://corpus/daily.txt', '--cron', cron, '--out', `s3://out/${name}/{date}/`, '--dimension', '64', ...extra]);
  /**
   * What a Redis restarted without persistence leaves of a schedule: nothing, and no mark of the
   * last file check either (a schedule merely removed leaves the mark; see the last test).
   */
  const loseSchedule = async (name: string): Promise<void> => {
    await world.services.queues[QUEUES.schedule].removeJobScheduler(name);
    await store.remove(name);
    await world.services.redis.del(`${world.settings.redisPrefix}:schedules:file-checked`);
  };
  /** Every key of this world's prefix gone, as after a FLUSHALL or a restart without persistence. */
  const loseRedisData = async (): Promise<void> => {
    const keys = await world.services.redis.keys(`${world.settings.redisPrefix}:*`);
    if (keys.length > 0) await world.services.redis.del(...keys);
  };

  beforeAll(async () => {
    world = await startWorld();
    store = new ScheduleStore(world.services.redis, world.settings.redisPrefix);
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-schedules-'));
    await world.put('daily.txt', 'one line\n');
  });
  afterAll(async () => {
    await world?.close();
    await rm(folder, { recursive: true, force: true });
  });

  it('export, then apply into a Redis that lost them: the same schedules, each with its next tick; apply again changes nothing; --prune removes the rest', async () => {
    expect((await add('nightly', '0 3 * * *', ['--tz', 'Europe/Berlin', '--incremental'])).code).toBe(0);
    expect((await add('hourly', '0 * * * *', ['--on-overlap', 'queue'])).code).toBe(0);
    const exported = await runEmbedq(world.env, ['schedule', 'export']);
    expect(exported.code, exported.stderr).toBe(0);
    const file = path.join(folder, 'schedules.json');
    await writeFile(file, exported.stdout);
    const before = await Promise.all(['hourly', 'nightly'].map((name) => store.get(name)));

    for (const name of ['nightly', 'hourly']) await loseSchedule(name);
    expect(await store.names()).toEqual([]);
    const applied = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(applied.code, applied.stderr).toBe(0);
    // In the file's order: export lists schedules as they were created.
    expect(applied.stdout).toBe('added schedule nightly\nadded schedule hourly\n');
    for (const [index, name] of ['hourly', 'nightly'].entries()) {
      const { createdAt: _c, updatedAt: _u, ...definition } = (await store.get(name))!;
      const { createdAt: _bc, updatedAt: _bu, ...original } = before[index]!;
      expect(definition).toEqual(original);
      expect(await nextTick(world.services.queues[QUEUES.schedule], name)).toBeGreaterThan(Date.now());
    }

    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).stdout).toBe('unchanged schedule nightly\nunchanged schedule hourly\n');
    expect((await add('adhoc', '*/5 * * * *')).code).toBe(0);
    const pruned = await runEmbedq(world.env, ['schedule', 'apply', file, '--prune']);
    expect(pruned.stdout).toBe('unchanged schedule nightly\nunchanged schedule hourly\nremoved schedule adhoc\n');
    expect((await store.names()).sort()).toEqual(['hourly', 'nightly']);
    expect(await nextTick(world.services.queues[QUEUES.schedule], 'adhoc')).toBeNull();
  });

  it('export says which schedules an older version let in that apply and a worker would refuse (the file is still written whole)', async () => {
    // An older version took a name of digits only; this one refuses it at add, apply and a worker's file.
    const hourly = (await store.get('hourly'))!;
    await store.upsert({ ...hourly, name: '2027', out: 's3://out/year-2027/{date}/' });
    try {
      const exported = await runEmbedq(world.env, ['schedule', 'export']);
      expect(exported.code, exported.stderr).toBe(0);
      expect((JSON.parse(exported.stdout) as { schedules: Array<{ name: string }> }).schedules.map((schedule) => schedule.name)).toContain('2027');
      // Before, nothing was said: the file was refused whole only when Redis had lost its data.
      expect(exported.stderr).toContain("embedq: warning: schedule apply and a worker's EMBEDQ_SCHEDULES_FILE refuse this file as it stands");
      expect(exported.stderr).toContain('schedule 2027: schedule name "2027": digits only');
      const file = path.join(folder, 'older.json');
      await writeFile(file, exported.stdout);
      expect((await runEmbedq(world.env, ['schedule', 'apply', file])).code).toBe(2);
    } finally {
      await store.remove('2027');
    }
    expect((await runEmbedq(world.env, ['schedule', 'export'])).stderr).toBe('');
  });

  it('refuses a bad file before touching Redis, naming the file, the schedule and every problem (exit 2)', async () => {
    const file = path.join(folder, 'bad.json');
    const good = { name: 'fine', cron: '0 3 * * *', input: 's3://corpus/daily.txt', out: 's3://out/fine/{date}/', options: { dimension: 64 } };
    await writeFile(
      file,
      JSON.stringify({
        version: 1,
        schedules: [
          good,
          { ...good, name: 'badcron', cron: '61 * * * *' },
          { ...good, name: 'hashed', cron: 'H 3 * * *', out: 's3://out/hashed/{date}/' },
          { ...good, name: 'baddim', options: { dimension: 999 } },
          { ...good },
          // Before, each misspelt key was dropped and its default applied, exit 0.
          { ...good, name: 'typos', out: 's3://out/typos/{date}/', options: { dimesion: 64, outputtype: 'dense' }, onoverlap: 'queue', Incremental: true },
          { ...good, name: 'zoned', out: 's3://out/zoned/{date}/', timezone: 'Europe/Berlin', output_type: 'dense', options: { output: 's3://out/x/' } },
        ],
      }),
    );
    const result = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`schedules file ${file}:`);
    expect(result.stderr).toMatch(/- schedule badcron: --cron "61 \* \* \* \*"/);
    expect(result.stderr).toContain('- schedule hashed: --cron "H 3 * * *": "H" (a hashed value) is not supported');
    expect(result.stderr).toMatch(/- schedule baddim: Invalid options:\n {2}- dimension: 999 is not allowed/);
    expect(result.stderr).toContain('- schedule fine: named twice');
    for (const problem of [
      'schedule typos: options.dimesion: unknown key (did you mean dimension?); options.outputtype: unknown key (did you mean outputType?)',
      'schedule typos: onoverlap: unknown key (did you mean onOverlap?); Incremental: unknown key (did you mean incremental?)',
      'schedule zoned: timezone: unknown key (did you mean tz?); output_type: unknown key (did you mean options.outputType?)',
      "schedule zoned: options.output: unknown key (did you mean the schedule's out, beside cron?)",
    ]) {
      expect(result.stderr).toContain(`- ${problem}`);
    }
    expect(await store.get('fine')).toBeUndefined();
    // A worker given it does not start.
    const worker = await runEmbedq({ ...world.env, EMBEDQ_SCHEDULES_FILE: file }, ['worker']);
    expect(worker.code).toBe(2);
    expect(worker.stderr).toContain('- schedule badcron:');

    // A placeholder in the bucket name leaves the root "s3://": before, accepted, and every run failed.
    await writeFile(file, JSON.stringify({ version: 1, schedules: [{ ...good, out: 's3://vec-{date}/x/' }] }));
    const bucket = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(bucket.code).toBe(2);
    expect(bucket.stderr).toContain('- schedule fine: --out "s3://vec-{date}/x/": a placeholder may not appear in the bucket name');
    expect(await store.get('fine')).toBeUndefined();

    await writeFile(file, JSON.stringify({ version: 1, schedule: [good] }));
    await expect(readScheduleFile(file)).rejects.toThrow('schedule: unknown key (did you mean schedules?)');

    await writeFile(file, '{"version": 1, "schedules": [');
    const unreadable = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(unreadable.code).toBe(2);
    expect(unreadable.stderr).toContain(`schedules file ${file}: `);
  });

  it('a worker given the file puts back a schedule Redis lost, and the BullMQ scheduler of one that kept its record, and leaves a changed one alone', async () => {
    const file = path.join(folder, 'worker.json');
    const definitions = [
      { name: 'kept', cron: '0 4 * * *', tz: 'UTC', input: 's3://corpus/daily.txt', out: 's3://out/kept/{date}/', options: { dimension: 64 }, incremental: false, onOverlap: 'skip' },
      { name: 'lost', cron: '0 5 * * *', tz: 'Asia/Tokyo', input: 's3://corpus/daily.txt', out: 's3://out/lost/{date}/', options: { dimension: 64 }, incremental: false, onOverlap: 'skip' },
      { name: 'unscheduled', cron: '0 6 * * *', tz: 'UTC', input: 's3://corpus/daily.txt', out: 's3://out/unscheduled/{date}/', options: { dimension: 64 }, incremental: false, onOverlap: 'skip' },
    ];
    await writeFile(file, JSON.stringify({ version: 1, schedules: definitions }));
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).code).toBe(0);
    // A hand-written file's options are stored with their defaults, as `add` stores them: applied
    // again, nothing changes.
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).stdout).toBe('unchanged schedule kept\nunchanged schedule lost\nunchanged schedule unscheduled\n');
    expect((await store.get('lost'))?.options).toMatchObject({ dimension: 64, model: 'text-embedding-v4', outputType: 'dense&sparse' });
    // Changed by hand since: the worker does not undo it (only `apply` brings the file's version).
    expect((await add('kept', '30 4 * * *')).code).toBe(0);
    await loseSchedule('lost');
    await world.services.queues[QUEUES.schedule].removeJobScheduler('unscheduled');

    const pool = startWorkers(world.services, { concurrency: 2, schedules: { file, definitions: await readScheduleFile(file), intervalMs: 200 } });
    try {
      const deadline = Date.now() + 10_000;
      while (((await store.get('lost')) === undefined || (await nextTick(world.services.queues[QUEUES.schedule], 'unscheduled')) === null) && Date.now() < deadline) await sleep(100);
      expect((await store.get('lost'))?.tz).toBe('Asia/Tokyo');
      expect(await nextTick(world.services.queues[QUEUES.schedule], 'lost')).toBeGreaterThan(Date.now());
      expect(await nextTick(world.services.queues[QUEUES.schedule], 'unscheduled')).toBeGreaterThan(Date.now());
      expect((await store.get('kept'))?.cron).toBe('30 4 * * *');

      // Lost again while the worker runs (Redis restarted under it): back within a check or two.
      await loseSchedule('lost');
      const again = Date.now() + 5_000;
      while ((await store.get('lost')) === undefined && Date.now() < again) await sleep(100);
      expect(await store.get('lost')).toBeDefined();
    } finally {
      await pool.close();
    }
    const exported = JSON.parse((await runEmbedq(world.env, ['schedule', 'export'])).stdout) as { schedules: Array<{ name: string }> };
    expect(exported.schedules.map((schedule) => schedule.name)).toEqual(expect.arrayContaining(['kept', 'lost', 'unscheduled']));
    expect(JSON.parse(await readFile(file, 'utf8')).schedules).toHaveLength(3);
  });

  it('a schedule whose Job Scheduler planned no next tick is installed again by apply and by a worker given the file', async () => {
    const queue = world.services.queues[QUEUES.schedule];
    const file = path.join(folder, 'dead.json');
    const definition = { name: 'dead', cron: '0 1 * * *', tz: 'Australia/Lord_Howe', input: 's3://corpus/daily.txt', out: 's3://out/dead/{date}/', options: { dimension: 64 }, incremental: false, onOverlap: 'skip' };
    await writeFile(file, JSON.stringify({ version: 1, schedules: [definition] }));
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).code).toBe(0);
    /**
     * What cron-parser's "loop limit exceeded" left once the tick it followed had run: BullMQ keeps
     * the scheduler with that tick as its next, and no job for a next one.
     */
    const killScheduler = async (): Promise<number> => {
      const next = (await queue.getJobScheduler('dead'))!.next!;
      const jobId = `repeat:dead:${next}`;
      await world.services.redis.zrem(`${world.settings.redisPrefix}:${QUEUES.schedule}:delayed`, jobId);
      await world.services.redis.del(`${world.settings.redisPrefix}:${QUEUES.schedule}:${jobId}`);
      expect(await queue.getJob(jobId)).toBeUndefined();
      return next;
    };

    const stale = await killScheduler();
    expect(await nextTick(queue, 'dead')).toBeNull();
    // Before, `unchanged`: any `next` counted as healthy, so the schedule never ticked again.
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).stdout).toBe('updated schedule dead\n');
    expect(await nextTick(queue, 'dead')).toBe(stale);

    await killScheduler();
    expect(await restoreLostSchedules(world.services, await readScheduleFile(file), world.services.logger)).toEqual(['dead']);
    expect(await nextTick(queue, 'dead')).toBe(stale);
    await store.remove('dead');
    await queue.removeJobScheduler('dead');
  });

  it('a schedule removed while workers run with a file naming it stays removed; the file as edited since is what a lost Redis gets back', async () => {
    const file = path.join(folder, 'edited.json');
    const schedule = (name: string, cron: string) => ({ name, cron, tz: 'UTC', input: 's3://corpus/daily.txt', out: `s3://out/${name}/{date}/`, options: { dimension: 64 } });
    await writeFile(file, JSON.stringify({ version: 1, schedules: [schedule('nightly', '0 2 * * *'), schedule('hourly', '0 * * * *')] }));
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).code).toBe(0);
    const pool = startWorkers(world.services, { concurrency: 2, schedules: { file, definitions: await readScheduleFile(file), intervalMs: 200 } });
    try {
      // The operator stops the nightly run. Before, the worker put it back within a check.
      expect((await runEmbedq(world.env, ['schedule', 'remove', 'nightly'])).code).toBe(0);
      await sleep(1_500);
      expect(await store.get('nightly')).toBeUndefined();
      expect(await nextTick(world.services.queues[QUEUES.schedule], 'nightly')).toBeNull();

      // The file is edited in place (a ConfigMap): nightly gone, hourly at :15, a weekly one.
      // With Redis intact the worker changes nothing (`apply` is how an edit takes effect)...
      await writeFile(file, JSON.stringify({ version: 1, schedules: [schedule('hourly', '15 * * * *'), schedule('weekly', '0 3 * * 1')] }));
      await sleep(1_000);
      expect((await store.get('hourly'))?.cron).toBe('0 * * * *');
      expect(await store.get('weekly')).toBeUndefined();
      // ...and a Redis that lost its data gets the file's schedules as they are now.
      await loseRedisData();
      const deadline = Date.now() + 10_000;
      while ((await store.get('weekly')) === undefined && Date.now() < deadline) await sleep(100);
      expect((await store.get('hourly'))?.cron).toBe('15 * * * *');
      expect((await store.get('weekly'))?.cron).toBe('0 3 * * 1');
      expect(await nextTick(world.services.queues[QUEUES.schedule], 'weekly')).toBeGreaterThan(Date.now());
      expect(await store.names()).not.toContain('nightly');

      // A file that no longer reads (a bad edit): the last good version is what comes back.
      await writeFile(file, '{ "version": 1, "schedules": [');
      await sleep(500);
      await loseRedisData();
      const again = Date.now() + 10_000;
      while ((await store.get('weekly')) === undefined && Date.now() < again) await sleep(100);
      expect((await store.names()).sort()).toEqual(['hourly', 'weekly']);
    } finally {
      await pool.close();
    }
  });
});
