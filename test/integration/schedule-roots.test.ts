import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ScheduleStore } from '../../jobs/schedule-store.js';
import type { Manifest } from '../../src/output/manifest.js';
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
