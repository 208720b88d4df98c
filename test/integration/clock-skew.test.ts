import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { UnrecoverableError, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import type { CorpusJobRecord } from '../../jobs/corpus-store.js';
import { cancelCorpusJob, corpusJobIdTime, submitCorpusJob } from '../../jobs/enqueue.js';
import { queueOptions, QUEUES, splitJobId } from '../../jobs/queues.js';
import { runSchedule } from '../../jobs/schedule-run.js';
import { parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { metricsKeys } from '../../src/metrics/metrics-keys.js';
import { MetricsRecorder } from '../../src/metrics/metrics-recorder.js';
import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { redisNow } from '../../src/redis/redis-clock.js';
import { refuseSkewedClock, watchClockSkew } from '../../workers/clock-watch.js';
import { sweepFailedJobs } from '../../workers/fail-on-lost-jobs.js';
import { publishScheduleLatest } from '../../workers/schedule-outcome.js';
import { scheduleStore } from '../../workers/schedule-tick.js';
import { runEmbedq, startWorld, type World } from '../support/world.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * A machine whose clock is off (NTP broken) in a fleet sharing one Redis: what orders or ages
 * records of many machines runs on Redis's clock, so one such machine cannot reorder runs, hide
 * the other workers, blind the failed-step sweep or prune records early. The machine's clock is
 * this process's `Date` (faked, moved ahead); Redis's TIME is the real one.
 */
describe('a machine whose clock is ahead of Redis', () => {
  let world: World;
  const outputs = path.join(tmpdir(), `embedq-clock-${process.pid}`);
  const deps = () => ({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() });
  /** From here on, this process's clock reads `aheadMs` ahead of Redis's. */
  const clockAhead = (aheadMs: number): void => {
    const real = Date.now();
    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
    vi.setSystemTime(real + aheadMs);
  };

  beforeAll(async () => {
    world = await startWorld({}, { EMBEDQ_JOB_RETENTION_DAYS: '1' });
    await world.put('x.txt', 'one line\n');
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  afterAll(async () => {
    await world.close();
    await rm(outputs, { recursive: true, force: true });
  });

  it("makes corpus job ids on Redis's clock: a run started on a clock an hour ahead does not pin _latest.json", async () => {
    const schedules = scheduleStore(world.services);
    const out = path.join(outputs, 'skew', '{runId}') + '/';
    await schedules.upsert({ name: 'skew', cron: '0 0 1 1 *', tz: 'UTC', input: 's3://corpus/x.txt', out, options: {}, incremental: false, onOverlap: 'skip' });
    const runDeps = { ...deps(), schedules };

    // `schedule run` from a box an hour ahead, then (that run ended) one from a correct box.
    clockAhead(HOUR);
    const fast = await runSchedule(runDeps, 'skew', Date.now(), 'run');
    vi.useRealTimers();
    if (fast.kind !== 'submitted') throw new Error(`not submitted: ${JSON.stringify(fast)}`);
    await cancelCorpusJob(world.services.corpora, fast.jobId);
    const later = await runSchedule(runDeps, 'skew', Date.now(), 'run');
    if (later.kind !== 'submitted') throw new Error(`not submitted: ${JSON.stringify(later)}`);

    // Both finished, the fast one first; the later run's pointer must win.
    for (const run of [fast, later]) {
      await mkdir(run.output, { recursive: true });
      await writeFile(path.join(run.output, '_manifest.json'), JSON.stringify({ job_id: run.jobId, finished_at: new Date().toISOString(), counts: { lines: 1, embedded: 1 } }));
      await writeFile(path.join(run.output, '_SUCCESS'), '');
      await publishScheduleLatest(world.services, { id: run.jobId, schedule: 'skew', options: { output: run.output } } as CorpusJobRecord, world.services.logger);
    }
    const latest = JSON.parse(await readFile(path.join(outputs, 'skew', '_latest.json'), 'utf8')) as { job_id: string };
    // Before, the fast run's id read an hour newer: "_latest.json left as it is: it names …, a
    // newer run" for every run of that hour, and incremental runs diffed against the stale one.
    expect(latest.job_id).toBe(later.jobId);
    await schedules.remove('skew');

    // A plain submit from a fast box too: its id's time is Redis's.
    clockAhead(HOUR);
    const submitted = await submitCorpusJob(deps(), parseJobOptions({ input: 's3://corpus/x.txt', output: path.join(outputs, 'submit') }));
    vi.useRealTimers();
    expect(Math.abs(corpusJobIdTime(submitted)! - (await redisNow(world.services.redis)))).toBeLessThan(10_000);
    await cancelCorpusJob(world.services.corpora, submitted);
  });

  it("scores heartbeats on Redis's clock: a worker an hour ahead does not drop the others from the live workers", async () => {
    const keys = metricsKeys(world.settings.redisPrefix);
    // A healthy worker on another machine, seen just now.
    const other = { id: 'other-host:7', host: 'other-host', pid: 7, concurrency: 4, startedAt: Date.now(), lastSeen: Date.now() };
    await world.services.redis.zadd(keys.workers, await redisNow(world.services.redis), other.id);
    await world.services.redis.set(keys.worker(other.id), JSON.stringify(other), 'PX', 20_000);

    clockAhead(HOUR);
    const recorder = new MetricsRecorder(world.services.redis, world.settings.redisPrefix, { flushIntervalMs: 60_000 });
    recorder.start({ concurrency: 2 });
    await recorder.flush();
    // Read on the fast clock (a dashboard beside it) and on a correct one: both see both workers.
    const seenFast = (await liveWorkers(world.services.redis, world.settings.redisPrefix)).map((worker) => worker.id);
    vi.useRealTimers();
    const seen = await liveWorkers(world.services.redis, world.settings.redisPrefix);
    // Before, the fast worker's flush pruned every heartbeat older than its own now minus an hour.
    expect(seen.map((worker) => worker.id)).toContain(other.id);
    expect(seen).toHaveLength(2);
    expect(seenFast).toEqual(seen.map((worker) => worker.id));
    expect(Math.max(...seen.map((worker) => worker.ageSeconds))).toBeLessThan(10);
    await recorder.stop();
  });

  it("keeps the failed-step sweep's cursor behind Redis's clock: a failure stamped an hour ahead hides none stamped correctly", async () => {
    const split = world.services.queues[QUEUES.split];
    const sweepKeys = `${world.settings.redisPrefix}:failed-sweep`;
    const sweep = async (): Promise<void> => {
      await world.services.redis.del(`${sweepKeys}:lock`);
      await sweepFailedJobs(world.services, [QUEUES.split]).close();
    };
    // A step failed 20 s ago by a worker whose clock is an hour ahead, swept by that worker.
    const fastFailure = (await redisNow(world.services.redis)) + HOUR - 20_000;
    await world.services.redis.zadd(split.keys.failed!, fastFailure, 'cj-zzzzzzzz-000000-g0-split');
    clockAhead(HOUR);
    await sweep();
    vi.useRealTimers();
    const cursor = Number(await world.services.redis.get(`${sweepKeys}:cursor:${QUEUES.split}`));
    expect(cursor).toBeLessThanOrEqual((await redisNow(world.services.redis)) - 10_000 + 1);

    // Now a step of a real job fails on a correct clock, past its stall limit, where no processor of ours sees it.
    const id = await submitCorpusJob(deps(), parseJobOptions({ input: 's3://corpus/x.txt', output: path.join(outputs, 'swept') }));
    const bare = new Worker(
      QUEUES.split,
      async () => {
        throw new UnrecoverableError('job stalled more than allowable limit');
      },
      queueOptions(world.settings.redisPrefix, world.services.workerConnection()),
    );
    try {
      await expect.poll(() => split.getJobState(splitJobId(id, 0)), { timeout: 5_000 }).toBe('failed');
    } finally {
      await bare.close();
    }
    await sweep();
    // Before, the cursor sat an hour ahead and this failure was never read: the job stayed queued.
    const record = (await world.services.corpora.get(id))!;
    expect(record.state).toBe('failed');
    expect(record.errorCode).toBe('JOB_STALLED');
  });

  it("prunes ended jobs' records by Redis's clock: a submit from a machine 2 days ahead keeps those within the retention", async () => {
    const jobs = world.services.corpora.jobs;
    const seed = async (id: string, endedAgoMs: number): Promise<void> => {
      await jobs.create(id, parseJobOptions({ input: 's3://corpus/x.txt', output: path.join(outputs, id) }));
      await jobs.markRunning(id, 0);
      await jobs.markCompleted(id, 0);
      const ended = (await redisNow(world.services.redis)) - endedAgoMs;
      await world.services.redis.zadd(`${world.settings.redisPrefix}:jobs`, ended - 60_000, id);
      await world.services.redis.hset(`${world.settings.redisPrefix}:job:${id}`, 'createdAt', ended - 60_000, 'finishedAt', ended);
    };
    await seed('cj-ended-hour-ago', HOUR);
    await seed('cj-ended-2-days-ago', 2 * DAY);

    clockAhead(2 * DAY);
    const fresh = await submitCorpusJob(deps(), parseJobOptions({ input: 's3://corpus/x.txt', output: path.join(outputs, 'pruning') }));
    vi.useRealTimers();
    // Before, the retention (1 day) ran from the submitter's now: every ended job's record went.
    expect(await world.services.corpora.get('cj-ended-hour-ago')).toBeDefined();
    expect(await world.services.corpora.get('cj-ended-2-days-ago')).toBeUndefined();
    await cancelCorpusJob(world.services.corpora, fresh);
  });

  it("stamps a job's times on Redis's clock: a submit and a cancel from a machine 2 days behind list in order and stay for the retention; a retry note too", async () => {
    const options = (name: string) => parseJobOptions({ input: 's3://corpus/x.txt', output: path.join(outputs, name) });
    const first = await submitCorpusJob(deps(), options('order-first'));
    clockAhead(-2 * DAY);
    const behind = await submitCorpusJob(deps(), options('order-behind'));
    await cancelCorpusJob(world.services.corpora, behind);
    vi.useRealTimers();
    const recordOf = async (id: string) => (await world.services.corpora.get(id))!;
    const now = await redisNow(world.services.redis);
    for (const time of [(await recordOf(behind)).createdAt, (await recordOf(behind)).finishedAt!]) expect(Math.abs(now - time)).toBeLessThan(60_000);

    // The next submit prunes records that ended over a day ago: before, the cancel stamped from the
    // clock 2 days behind made this one of them, and `list` put it below the job submitted before it.
    const last = await submitCorpusJob(deps(), options('order-last'));
    expect(await world.services.corpora.get(behind)).toBeDefined();
    const listed = (await world.services.corpora.list()).map((record) => record.id);
    expect(listed.indexOf(last)).toBeLessThan(listed.indexOf(behind));
    expect(listed.indexOf(behind)).toBeLessThan(listed.indexOf(first));

    // A failed attempt noted by a worker 20 s behind (within the bound a worker may run at): `status`
    // said "retrying … (20 s ago)" of an attempt that had just failed.
    clockAhead(-20_000);
    await world.services.corpora.jobs.noteRetry(last, (await recordOf(last)).generation, 'embed-batch attempt 1 of 5: PROVIDER_UNAVAILABLE: HTTP 503');
    vi.useRealTimers();
    expect(Math.abs((await recordOf(last)).lastRetryAt! - (await redisNow(world.services.redis)))).toBeLessThan(5_000);
    for (const id of [first, last]) await cancelCorpusJob(world.services.corpora, id);
  });

  it('refuses to start a worker whose clock is more than 30 s off Redis\'s (exit 2, naming the skew and NTP), unless EMBEDQ_MAX_CLOCK_SKEW_S=0', async () => {
    // The worker's clock 2 minutes ahead, moved in the process itself (Date.now is what the check reads).
    const ahead = { ...world.env, NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent('const n = Date.now; Date.now = () => n() + 120000;')}` };
    const refused = await runEmbedq(ahead, ['worker']);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/CONFIG_INVALID: this machine's clock is 1(19|20)\.\d s ahead of Redis's, more than EMBEDQ_MAX_CLOCK_SKEW_S \(30 s\).*\(NTP, chrony\)/);

    const redis = world.services.redis;
    await expect(refuseSkewedClock(redis, 30_000, () => Date.now() - 45_000)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/4[45]\.\d s behind Redis's/) });
    await expect(refuseSkewedClock(redis, 30_000, () => Date.now() + 5_000)).resolves.toBeUndefined();
    await expect(refuseSkewedClock(redis, 0, () => Date.now() + HOUR)).resolves.toBeUndefined();
  });

  it('a running worker logs an error when its clock goes past the bound, once, and a line when it is back', async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    let offsetMs = HOUR;
    const watch = watchClockSkew(world.services, logger, 30_000, { intervalMs: 50, clock: () => Date.now() + offsetMs });
    try {
      await expect.poll(() => lines.length).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      offsetMs = 0;
      await expect.poll(() => lines.length).toBe(2);
    } finally {
      watch.close();
    }
    const [error, back] = lines.map((line) => JSON.parse(line) as { level: number; msg: string; clockSkewMs: number });
    expect(error).toMatchObject({ level: 50, msg: expect.stringMatching(/^this machine's clock is 3600\.\d s ahead of Redis's, more than EMBEDQ_MAX_CLOCK_SKEW_S/) });
    expect(back).toMatchObject({ level: 30, msg: "this machine's clock agrees with Redis's again" });
  });
});
