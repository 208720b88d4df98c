import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ScheduleStore, type ScheduleDefinition } from '../../jobs/schedule-store.js';
import type { Manifest } from '../../src/output/manifest.js';
import { addSchedule, applySchedules } from '../../workers/schedule-file.js';
import { startWorkers } from '../../workers/start-workers.js';
import { runEmbedq, startWorld, type World } from '../support/world.js';

/**
 * Schedules whose templates share a root share its `_latest.json`: each incremental run built on
 * the other schedule's last run, sent every line and missed the deletes. Real Redis, local folders,
 * the emulator, workers in-process.
 */
const LINES = 12;

describe('schedule roots', { timeout: 120_000 }, () => {
  let world: World;
  let store: ScheduleStore;
  let folder: string;
  const corpus = (language: string, ids: number[]): string => ids.map((id) => JSON.stringify({ id: `${language}-${id}`, text: `${language} line ${id}` })).join('\n');
  const allIds = Array.from({ length: LINES }, (_, index) => index);
  const flags = ['--cron', '0 0 1 1 *', '--incremental', '--id-field', 'id', '--dimension', '64', '--output-type', 'dense'];
  const add = (name: string, input: string, out: string, extra: string[] = flags) => runEmbedq(world.env, ['schedule', 'add', name, input, '--out', out, ...extra]);
  const manifestOf = (output: string): Manifest => JSON.parse(readFileSync(path.join(output, '_manifest.json'), 'utf8')) as Manifest;
  const run = async (name: string): Promise<string> => {
    const result = await runEmbedq(world.env, ['schedule', 'run', name, '--wait']);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  };

  beforeAll(async () => {
    world = await startWorld();
    store = new ScheduleStore(world.services.redis, world.settings.redisPrefix);
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-schedule-roots-'));
    await mkdir(path.join(folder, 'in'));
    await writeFile(path.join(folder, 'in/en.jsonl'), corpus('en', allIds));
    await writeFile(path.join(folder, 'in/de.jsonl'), corpus('de', allIds));
    await world.put('docs.txt', 'one line\n');
  });
  afterAll(async () => {
    await world?.close();
    await rm(folder, { recursive: true, force: true });
  });

  it('add and apply refuse a schedule sharing a root or an output with another, or whose runs can reach its root; nested roots they cannot reach are fine', async () => {
    const en = path.join(folder, 'in/en.jsonl');
    expect((await add('nightly-en', en, path.join(folder, 'root2/en-{runId}/'))).code).toBe(0);
    // Before, accepted: both kept _latest.json in root2/.
    const shared = await add('nightly-de', path.join(folder, 'in/de.jsonl'), path.join(folder, 'root2/de-{runId}/'));
    expect(shared.code).toBe(2);
    expect(shared.stderr).toContain(`has the same root ${path.join(folder, 'root2')}/ (where _latest.json is kept) as schedule nightly-en`);
    expect(await store.get('nightly-de')).toBeUndefined();
    // Replacing a schedule by name is no overlap with itself.
    const again = await add('nightly-en', en, path.join(folder, 'root2/en-{date}-{runId}/'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^updated schedule nightly-en/);

    // The README's pair: both rooted at s3://out/.
    const once = ['--cron', '0 3 * * *', '--dimension', '64'];
    expect((await add('nightly', 's3://corpus/', 's3://out/nightly-{date}/', once)).code).toBe(0);
    const weekly = await add('weekly', 's3://corpus/', 's3://out/weekly-{date}/', once);
    expect(weekly.code).toBe(2);
    expect(weekly.stderr).toContain('as schedule nightly ("s3://out/nightly-{date}/")');
    expect((await add('weekly', 's3://corpus/', 's3://out/weekly/{date}/', once)).code).toBe(0);

    // Two fixed outputs, one folder: before, both accepted and each run overwrote the other's.
    expect((await add('fixed-a', en, path.join(folder, 'fixed/'), once)).code).toBe(0);
    const fixed = await add('fixed-b', en, path.join(folder, 'fixed'), once);
    expect(fixed.code).toBe(2);
    expect(fixed.stderr).toContain('is also the output of schedule fixed-a');

    // s3://out/weekly/{date}/ can render s3://out/weekly/2026-11-29/, the root of this one.
    const reached = await add('daily-en', 's3://corpus/', 's3://out/weekly/2026-11-29/{time}/', once);
    expect(reached.code).toBe(2);
    expect(reached.stderr).toMatch(/the runs of schedule weekly \("s3:\/\/out\/weekly\/\{date\}\/"\) can land at or under the root s3:\/\/out\/weekly\/2026-11-29\/ of schedule daily-en/);
    // A date is never "en": nested, but their runs and pointers never meet. Nor do a fixed output's
    // runs reach a root inside it (deeper keys are other outputs).
    expect((await add('weekly-en', 's3://corpus/', 's3://out/weekly/en/{date}/', once)).code).toBe(0);
    expect((await add('inside-fixed', en, path.join(folder, 'fixed/en/{date}/'), once)).code).toBe(0);

    // A schedules file: checked within itself, and against what Redis keeps, before anything is written.
    const file = path.join(folder, 'schedules.json');
    const entry = (name: string, out: string) => ({ name, cron: '0 3 * * *', input: 's3://corpus/', out, options: { dimension: 64 } });
    await writeFile(file, JSON.stringify({ version: 1, schedules: [entry('a', 's3://out/files/a-{date}/'), entry('b', 's3://out/files/b-{date}/')] }));
    const inFile = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(inFile.code).toBe(2);
    expect(inFile.stderr).toContain('- schedule b: --out "s3://out/files/b-{date}/" has the same root s3://out/files/ (where _latest.json is kept) as schedule a');
    await writeFile(file, JSON.stringify({ version: 1, schedules: [entry('monthly', 's3://out/monthly-{date}/')] }));
    const withRedis = await runEmbedq(world.env, ['schedule', 'apply', file]);
    expect(withRedis.code).toBe(2);
    expect(withRedis.stderr).toContain('- schedule monthly: --out "s3://out/monthly-{date}/" has the same root s3://out/ (where _latest.json is kept) as schedule nightly');
    expect(await store.get('monthly')).toBeUndefined();
    // The file replaces a schedule it names, and --prune removes the ones in the way.
    await writeFile(file, JSON.stringify({ version: 1, schedules: [entry('nightly', 's3://out/monthly-{date}/')] }));
    expect((await runEmbedq(world.env, ['schedule', 'apply', file])).code).toBe(0);
    await writeFile(file, JSON.stringify({ version: 1, schedules: [entry('monthly', 's3://out/nightly/{date}/'), entry('fixed-b', path.join(folder, 'fixed/'))] }));
    const pruned = await runEmbedq(world.env, ['schedule', 'apply', file, '--prune']);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect((await store.names()).sort()).toEqual(['fixed-b', 'monthly']);
  });

  it('two adds (or an add and an apply) at once, from any machine, cannot both pass the root check', async () => {
    const definition = (name: string, out: string): ScheduleDefinition => ({
      name, cron: '0 3 * * *', tz: 'UTC', input: 's3://corpus/', out, options: { dimension: 64 }, incremental: false, onOverlap: 'skip',
    });
    // Each pair shares a root. Before, each side read the schedules before either wrote: both were added.
    for (let pair = 0; pair < 4; pair += 1) {
      const outcomes = await Promise.allSettled([
        addSchedule(world.services, definition(`race-${pair}-a`, `s3://race-${pair}/a-{date}/`)),
        pair % 2 === 0
          ? addSchedule(world.services, definition(`race-${pair}-b`, `s3://race-${pair}/b-{date}/`))
          : applySchedules(world.services, [definition(`race-${pair}-b`, `s3://race-${pair}/b-{date}/`)], false),
      ]);
      expect(outcomes.map((outcome) => outcome.status).sort(), `pair ${pair}`).toEqual(['fulfilled', 'rejected']);
      expect(String((outcomes.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult).reason)).toContain(`same root s3://race-${pair}/`);
      expect((await store.names()).filter((name) => name.startsWith(`race-${pair}-`))).toHaveLength(1);
    }
    expect(await world.services.redis.exists(`${world.settings.redisPrefix}:schedules:edit`)).toBe(0);
  });

  it("a submit by hand into the root of a schedule's runs is refused, naming the schedule; into a folder below it, or by the schedule itself, it runs", async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const root = path.join(folder, 'root4');
      const input = path.join(folder, 'in/en.jsonl');
      expect((await add('by-run', input, path.join(root, '{runId}/'))).code).toBe(0);
      const first = await run('by-run');
      // Before, it was accepted: its shards, manifest and _SUCCESS lay beside the runs' folders,
      // and a glob over the root read them with every run's.
      const refused = await runEmbedq(world.env, ['submit', input, '--out', root, '--dimension', '64', '--output-type', 'dense']);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(
        `embedq: OUTPUT_NOT_EMPTY: ${root} is the root of schedule by-run's runs (its _latest.json names ${path.join(root, first)}): a run submitted here would lie beside them`,
      );
      expect(refused.stderr).toContain('(embedq schedule run by-run)');
      // --overwrite would remove none of the runs: refused the same.
      expect((await runEmbedq(world.env, ['submit', input, '--out', `${root}/`, '--overwrite', '--dimension', '64', '--output-type', 'dense'])).code).toBe(2);
      expect(readdirSync(root).sort()).toEqual([first, '_latest.json'].sort());
      const below = await runEmbedq(world.env, ['submit', input, '--out', path.join(root, 'by-hand'), '--dimension', '64', '--output-type', 'dense', '--wait']);
      expect(below.code, below.stderr).toBe(0);
      const second = await run('by-run');
      expect(JSON.parse(readFileSync(path.join(root, '_latest.json'), 'utf8'))).toMatchObject({ job_id: second, schedule: 'by-run' });
    } finally {
      await pool.close();
    }
  });

  it("an incremental run follows _latest.json only when its own schedule wrote it (an older one without the field still is)", async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const root = path.join(folder, 'root3');
      const en = path.join(folder, 'in/en3.jsonl');
      await writeFile(en, corpus('en', allIds));
      expect((await add('old-en', en, path.join(root, 'en-{runId}/'))).code).toBe(0);
      // A second schedule on the same root, as Redis may hold from before add refused it.
      const enRecord = (await store.get('old-en'))!;
      await store.upsert({ ...enRecord, name: 'old-de', input: path.join(folder, 'in/de.jsonl'), out: path.join(root, 'de-{runId}') });

      const firstEn = await run('old-en');
      const de = await run('old-de');
      expect(JSON.parse(readFileSync(path.join(root, '_latest.json'), 'utf8'))).toMatchObject({ output: path.join(root, `de-${de}`), job_id: de, schedule: 'old-de' });
      await writeFile(en, corpus('en', allIds.slice(1)));
      const secondEn = await run('old-en');
      const second = manifestOf(path.join(root, `en-${secondEn}`));
      // Before, it built on de's run: reused_from de's output, every line sent, en-0 not in the deletes.
      expect(second.reused_from).toBeNull();
      expect(second.reuse_error).toBe(`${root}/_latest.json: written by schedule old-de, not by this run's schedule old-en (their roots are shared); not followed`);
      expect(second.counts).toMatchObject({ lines: LINES - 1, embedded: LINES - 1, reused: 0 });
      expect(existsSync(path.join(root, `en-${secondEn}`, '_delta'))).toBe(false);

      // A pointer written before the field existed is followed, whoever wrote it.
      await writeFile(path.join(root, '_latest.json'), JSON.stringify({ output: path.join(root, `en-${firstEn}`), job_id: firstEn, finished_at: second.finished_at, counts: second.counts }));
      const thirdEn = await run('old-en');
      const third = manifestOf(path.join(root, `en-${thirdEn}`));
      expect(third.reused_from).toBe(path.join(root, `en-${firstEn}`));
      expect(third.reuse_error).toBeNull();
      expect(third.counts).toMatchObject({ lines: LINES - 1, reused: LINES - 1, deleted: 1 });
      expect(readFileSync(path.join(root, `en-${thirdEn}`, '_delta/deletes.jsonl'), 'utf8').trim()).toBe('{"id":"en-0"}');
      expect(JSON.parse(readFileSync(path.join(root, '_latest.json'), 'utf8'))).toMatchObject({ job_id: thirdEn, schedule: 'old-en' });
    } finally {
      await pool.close();
    }
  });
});
