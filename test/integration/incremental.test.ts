import { readFileSync } from 'node:fs';
import path from 'node:path';

import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { retryCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import type { EmbeddingParameters } from '../../src/embedding.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import type { Manifest } from '../../src/output/manifest.js';
import { contentHash } from '../../src/reuse/content-key.js';
import { startWorkers } from '../../workers/start-workers.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * Issue 11 end to end: `schedule run` twice with `--incremental` pays only for what changed, the
 * second output is exact, and its `_delta/` lists exactly the new, changed and deleted ids. Real
 * Redis, s3rver, the emulator (with faults on the first run), DuckDB reading the files back.
 */
const SHARD_ROWS = 500;
const DIMENSION = 64;
const PARAMETERS: EmbeddingParameters = { model: 'text-embedding-v4', dimension: DIMENSION, outputType: 'dense&sparse', textType: 'document', instruct: undefined, api: 'dashscope' };

interface Doc {
  id: string;
  text: string;
}

const sentence = (i: number, edit = ''): string => `Document ${i}${edit}: the ${['river', 'market', 'orbit', '春眠不觉晓', 'ledger'][i % 5]} report number ${i * 17}.`;
const FIRST: Doc[] = Array.from({ length: 2_000 }, (_, i) => ({ id: `d${i}`, text: sentence(i) }));

/** 5% edited, 2% added (half in the middle, so later lines move), 1% deleted. */
function secondCorpus(): { docs: Doc[]; edited: string[]; added: string[]; deleted: string[] } {
  const edited = FIRST.filter((_, i) => i % 20 === 7).map((doc) => doc.id);
  const deleted = FIRST.filter((_, i) => i % 100 === 42).map((doc) => doc.id);
  const docs: Doc[] = [];
  const added: string[] = [];
  for (const [i, doc] of FIRST.entries()) {
    if (deleted.includes(doc.id)) continue;
    docs.push(edited.includes(doc.id) ? { id: doc.id, text: sentence(i, ' (revised)') } : doc);
    if (i === 1_000) for (let n = 0; n < 20; n++) docs.push({ id: `new-mid-${n}`, text: `A new document ${n} inserted in the middle.` });
  }
  for (let n = 0; n < 20; n++) docs.push({ id: `new-end-${n}`, text: `A new document ${n} appended at the end.` });
  added.push(...docs.filter((doc) => doc.id.startsWith('new-')).map((doc) => doc.id));
  return { docs, edited, added, deleted };
}

const jsonl = (docs: Doc[]): string => docs.map((doc) => JSON.stringify(doc)).join('\n');

// Each test runs whole jobs twice or more against an emulator with 429s and 5xx: give them time.
describe('incremental runs (--reuse, schedules --incremental, the delta)', { timeout: 180_000 }, () => {
  let world: World;
  const folders: string[] = [];
  const second = secondCorpus();

  const download = async (output: string): Promise<{ folder: string; keys: string[] }> => {
    const result = await downloadPrefix(world.s3, 'out', output.replace('s3://out/', ''));
    folders.push(result.folder);
    return result;
  };
  const manifestOf = (folder: string): Manifest => JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
  /** Every row of the output against a fresh embedding of its text, in corpus order. */
  const expectExact = async (folder: string, docs: Doc[], parameters = PARAMETERS): Promise<void> => {
    const rows = await queryParquet(`SELECT row, id, text, dense, sparse, content_hash FROM read_parquet(${sqlString(path.join(folder, 'part-*.parquet'))}) ORDER BY row`);
    expect(rows.map((row) => ({ row: Number(row.row), id: row.id, text: row.text }))).toEqual(docs.map((doc, row) => ({ row, id: doc.id, text: doc.text })));
    for (const row of rows) {
      const fresh = emulatorEmbedding(row.text as string, parameters);
      expect(row.dense).toEqual(Array.from(fresh.dense!));
      expect(row.sparse).toEqual(fresh.sparse);
      expect(row.content_hash).toBe(contentHash(row.text as string, parameters));
    }
  };
  const requestsDuring = async <T>(run: () => Promise<T>): Promise<{ result: T; accepted: number }> => {
    const before = world.emulator.stats().byStatus['200'] ?? 0;
    const result = await run();
    return { result, accepted: (world.emulator.stats().byStatus['200'] ?? 0) - before };
  };

  beforeAll(async () => {
    world = await startWorld({ seed: 5, faults: { failRate429: { requests: 0, tokens: 0, burst: 0.03 }, failRate500: 0.05, latencyMs: { min: 2, median: 5, p99: 20 } } });
    await world.put('docs/corpus.jsonl', jsonl(FIRST));
  });
  afterAll(async () => {
    await world?.close();
    for (const folder of folders) await removeFolder(folder);
  });

  it('schedule run twice with --incremental: the second run sends only the changed lines, is exact, and its delta lists exactly what changed', async () => {
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      const added = await runEmbedq(world.env, [
        'schedule', 'add', 'docs', 's3://corpus/docs/corpus.jsonl', '--cron', '0 0 1 1 *', '--out', 's3://out/docs/{runId}/',
        '--incremental', '--id-field', 'id', '--dimension', String(DIMENSION), '--shard-rows', String(SHARD_ROWS),
      ]);
      expect(added.code, added.stderr).toBe(0);
      const first = await runEmbedq(world.env, ['schedule', 'run', 'docs', '--wait']);
      expect(first.code, first.stderr).toBe(0);
      const firstId = first.stdout.trim();
      // The first run has no previous output at the root yet: it says so and embeds everything.
      const firstOut = await download(`s3://out/docs/${firstId}/`);
      const firstManifest = manifestOf(firstOut.folder);
      expect(firstManifest.reuse_error).toBe('s3://out/docs/: no _latest.json yet: schedule docs has no earlier good run to build on, so every line is embedded');
      expect(firstManifest.counts).toMatchObject({ lines: 2_000, embedded: 2_000, reused: 0 });
      expect(firstOut.keys.some((key) => key.startsWith('_delta/'))).toBe(false);
      await expectExact(firstOut.folder, FIRST);

      // The corpus changes; faults off so the request count is the requests that succeeded.
      await world.put('docs/corpus.jsonl', jsonl(second.docs));
      world.emulator.setFaults({ failRate429: { requests: 0, tokens: 0, burst: 0 }, failRate500: 0 });
      // `plan --reuse` says beforehand what the run will send.
      const planned = await runEmbedq(world.env, [
        'plan', 's3://corpus/docs/corpus.jsonl', '--reuse', 's3://out/docs/', '--id-field', 'id', '--dimension', String(DIMENSION), '--shard-rows', String(SHARD_ROWS), '--json',
      ]);
      expect(planned.code, planned.stderr).toBe(0);
      const plan = JSON.parse(planned.stdout) as { reused: number; requests: number; reused_from: string };
      expect(plan.reused_from).toBe(`s3://out/docs/${firstId}/`);
      const { result: run, accepted } = await requestsDuring(() => runEmbedq(world.env, ['schedule', 'run', 'docs', '--wait']));
      expect(run.code, run.stderr).toBe(0);
      const secondId = run.stdout.trim();
      const changedLines = second.edited.length + second.added.length;
      const shards = Math.ceil(second.docs.length / SHARD_ROWS);
      expect(accepted).toBeLessThanOrEqual(Math.ceil(changedLines / 10) + shards);
      expect(accepted).toBeGreaterThanOrEqual(Math.ceil(changedLines / 10));
      expect(plan).toMatchObject({ reused: second.docs.length - changedLines, requests: accepted });

      const out = await download(`s3://out/docs/${secondId}/`);
      await expectExact(out.folder, second.docs);
      const manifest = manifestOf(out.folder);
      expect(manifest.reused_from).toBe(`s3://out/docs/${firstId}/`);
      expect(manifest.reuse_error).toBeNull();
      expect(manifest.counts).toEqual({
        lines: second.docs.length, embedded: second.docs.length, skipped_blank: 0, failed: 0, truncated: 0,
        reused: second.docs.length - changedLines, new: second.added.length, changed: second.edited.length,
        unchanged: second.docs.length - changedLines, deleted: second.deleted.length,
      });
      // Tokens (and cost) count only what was sent: 7% of the lines, so well under 15% of the first run's.
      expect(manifest.tokens).toBeGreaterThan(0);
      expect(manifest.tokens).toBeLessThan(firstManifest.tokens * 0.15);

      // The delta: upserts are exactly the new and changed ids, with their exact rows; deletes the ids gone.
      const upserts = await queryParquet(`SELECT id, text, dense, content_hash FROM read_parquet(${sqlString(path.join(out.folder, '_delta/upserts-*.parquet'))}) ORDER BY row`);
      expect(upserts.map((row) => row.id)).toEqual(second.docs.filter((doc) => second.added.includes(doc.id) || second.edited.includes(doc.id)).map((doc) => doc.id));
      for (const row of upserts) expect(row.dense).toEqual(Array.from(emulatorEmbedding(row.text as string, PARAMETERS).dense!));
      const deletes = readFileSync(path.join(out.folder, '_delta/deletes.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { id: string });
      expect(deletes.map((entry) => entry.id).sort()).toEqual([...second.deleted].sort());
      expect(manifest.delta).toEqual({ upserts: out.keys.filter((key) => key.startsWith('_delta/upserts-')), deletes: '_delta/deletes.jsonl' });
      // Exactly the manifest's files, and the delta.
      expect(out.keys).toEqual([...manifest.shards.map((shard) => shard.file), '_SUCCESS', ...manifest.delta!.upserts, '_delta/deletes.jsonl', '_errors.jsonl', '_manifest.json'].sort());
    } finally {
      await pool.close();
    }
  });

  it('parameters are part of the key: another --dimension re-embeds everything (and every id counts as changed)', async () => {
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      const { result: submitted, accepted } = await requestsDuring(async () => {
        const result = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/dim128/', '--reuse', 's3://out/docs/', '--id-field', 'id', '--dimension', '128', '--shard-rows', String(SHARD_ROWS), '--wait']);
        return result;
      });
      expect(submitted.code, submitted.stderr).toBe(0);
      expect(accepted).toBeGreaterThanOrEqual(Math.ceil(second.docs.length / 10));
      const out = await download('s3://out/dim128/');
      const manifest = manifestOf(out.folder);
      // The previous output (the second run) has every id, each with another content key now.
      expect(manifest.counts).toMatchObject({ embedded: second.docs.length, reused: 0, new: 0, changed: second.docs.length, unchanged: 0, deleted: 0 });
      await expectExact(out.folder, second.docs, { ...PARAMETERS, dimension: 128 });
    } finally {
      await pool.close();
    }
  });

  it('nothing changed: no request, and shard files byte for byte those of the previous output', async () => {
    // Every shard is reused rows alone: the writer streams them (no whole-shard sort).
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      const { result: submitted, accepted } = await requestsDuring(() =>
        runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/dim128-again/', '--reuse', 's3://out/dim128/', '--id-field', 'id', '--dimension', '128', '--shard-rows', String(SHARD_ROWS), '--wait']),
      );
      expect(submitted.code, submitted.stderr).toBe(0);
      expect(accepted).toBe(0);
      const [before, after] = [await download('s3://out/dim128/'), await download('s3://out/dim128-again/')];
      expect(manifestOf(after.folder).counts).toMatchObject({ embedded: second.docs.length, reused: second.docs.length, unchanged: second.docs.length });
      const parts = before.keys.filter((key) => /^part-\d+\.parquet$/.test(key));
      expect(parts.length).toBe(Math.ceil(second.docs.length / SHARD_ROWS));
      expect(after.keys.filter((key) => /^part-\d+\.parquet$/.test(key))).toEqual(parts);
      for (const part of parts) expect(readFileSync(path.join(after.folder, part)).equals(readFileSync(path.join(before.folder, part))), part).toBe(true);
      await expectExact(after.folder, second.docs, { ...PARAMETERS, dimension: 128 });
    } finally {
      await pool.close();
    }
  });

  it('an empty corpus with --reuse --id-field fails INPUT_EMPTY and writes no delta (it deleted every id); without --id-field it completes empty', async () => {
    await world.put('empty/corpus.jsonl', '');
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      const withIds = await runEmbedq(world.env, ['submit', 's3://corpus/empty/corpus.jsonl', '--out', 's3://out/empty-delta/', '--reuse', 's3://out/dim128/', '--id-field', 'id', '--dimension', '128', '--wait']);
      expect(withIds.code).toBe(1);
      const failed = await world.services.corpora.get(withIds.stdout.trim().split('\n')[0]!);
      expect(failed).toMatchObject({ state: 'failed', errorCode: 'INPUT_EMPTY' });
      expect(failed!.error).toContain('s3://corpus/empty/corpus.jsonl has no line, and the previous output s3://out/dim128/ has ids: the delta would delete every one of them');
      const { keys } = await download('s3://out/empty-delta/');
      expect(keys.filter((key) => key.startsWith('_delta/') || key === '_SUCCESS')).toEqual([]);

      const withoutIds = await runEmbedq(world.env, ['submit', 's3://corpus/empty/corpus.jsonl', '--out', 's3://out/empty-reuse/', '--reuse', 's3://out/dim128/', '--dimension', '128', '--wait']);
      expect(withoutIds.code, withoutIds.stderr).toBe(0);
      const done = await download('s3://out/empty-reuse/');
      expect(manifestOf(done.folder).counts).toMatchObject({ lines: 0, embedded: 0 });
    } finally {
      await pool.close();
    }
  });

  it('lines moved out of order and a few edited: only the edits are sent, and the output is exact', async () => {
    // Previous rows no longer come in row order, so the writer hands the thread the shard to sort
    // whole; the in-order case (the first test) merges instead.
    const moved = [...second.docs].reverse().map((doc, i) => (i % 100 === 0 ? { ...doc, text: `${doc.text} (moved and edited)` } : doc));
    const edits = moved.filter((doc) => doc.text.endsWith('(moved and edited)')).length;
    await world.put('docs/moved.jsonl', jsonl(moved));
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      const { result: submitted, accepted } = await requestsDuring(() =>
        runEmbedq(world.env, ['submit', 's3://corpus/docs/moved.jsonl', '--out', 's3://out/dim128-moved/', '--reuse', 's3://out/dim128/', '--id-field', 'id', '--dimension', '128', '--shard-rows', String(SHARD_ROWS), '--wait']),
      );
      expect(submitted.code, submitted.stderr).toBe(0);
      const shards = Math.ceil(moved.length / SHARD_ROWS);
      expect(accepted).toBeGreaterThanOrEqual(Math.ceil(edits / 10));
      expect(accepted).toBeLessThanOrEqual(Math.ceil(edits / 10) + shards);
      const out = await download('s3://out/dim128-moved/');
      expect(manifestOf(out.folder).counts).toMatchObject({ embedded: moved.length, reused: moved.length - edits, changed: edits });
      await expectExact(out.folder, moved, { ...PARAMETERS, dimension: 128 });
    } finally {
      await pool.close();
    }
  });

  it('a missing or corrupt previous output is reported (manifest, status) and the run embeds everything; --reuse of the output itself is refused', async () => {
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'corrupt/_SUCCESS', Body: '' }));
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'corrupt/_manifest.json', Body: '{"job_id": "cj-x", "shards": [' }));
      for (const [previous, reason] of [
        ['s3://out/never-written/', /s3:\/\/out\/never-written\/: no _manifest\.json or _latest\.json/],
        ['s3://out/corrupt/', /corrupt\/_manifest\.json: not valid JSON/],
      ] as const) {
        const output = `s3://out/from-${previous.split('/')[3]}/`;
        const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', output, '--reuse', previous, '--id-field', 'id', '--dimension', String(DIMENSION), '--shard-rows', String(SHARD_ROWS), '--wait']);
        expect(submitted.code, submitted.stderr).toBe(0);
        const id = submitted.stdout.trim();
        const status = await runEmbedq(world.env, ['status', id]);
        expect(status.stdout).toMatch(/reuse\s+unavailable, every line embedded: /);
        expect(status.stdout).toMatch(reason);
        const out = await download(output);
        const manifest = manifestOf(out.folder);
        expect(manifest.reuse_error).toMatch(reason);
        expect(manifest.reused_from).toBeNull();
        expect(manifest.counts).toEqual({ lines: second.docs.length, embedded: second.docs.length, skipped_blank: 0, failed: 0, truncated: 0, reused: 0 });
        expect(out.keys.some((key) => key.startsWith('_delta/'))).toBe(false);
        await expectExact(out.folder, second.docs);
      }
      const self = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/self/', '--reuse', 's3://out/self']);
      expect(self.code).toBe(2);
      expect(self.stderr).toContain("s3://out/self is this job's own output");
    } finally {
      await pool.close();
    }
  });

  it('a worker SIGKILLed mid incremental run, and a cancel then retry: exact output and the same delta', async () => {
    const previous = 's3://out/dim128/'; // made from the second corpus: everything reusable
    await world.put('docs/third.jsonl', jsonl(FIRST)); // back to the first corpus: edits undone, added ids deleted, deleted ids new
    const expectedChanged = second.edited.length;
    // Slow answers: every shard has edited lines, so the run is still going when a shard or two are written.
    world.emulator.setFaults({ latencyMs: { min: 1_000, median: 1_200, p99: 1_500 } });
    const submitArgs = (output: string) => ['submit', 's3://corpus/docs/third.jsonl', '--out', output, '--reuse', previous, '--id-field', 'id', '--dimension', '128', '--shard-rows', '200'];

    // SIGKILL: the worker dies once a shard is written; another takes over.
    const killed = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let rescuer: ReturnType<typeof spawnEmbedq> | undefined;
    try {
      const submitted = await runEmbedq(world.env, submitArgs('s3://out/killed/'));
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 2);
      await stopProcess(killed, 'SIGKILL');
      const midway = (await world.services.corpora.get(id))!;
      expect(midway.state).toBe('running');
      expect(midway.shardsWritten).toBeLessThan(FIRST.length / 200);
      world.emulator.setFaults({ latencyMs: { min: 100, median: 150, p99: 200 } });
      rescuer = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await stopProcess(killed, 'SIGKILL');
      if (rescuer) await stopProcess(rescuer);
    }

    // Cancel mid-run, then retry: the new generation keeps the written shards and finishes the rest.
    world.emulator.setFaults({ latencyMs: { min: 1_000, median: 1_200, p99: 1_500 } });
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const submitted = await runEmbedq(world.env, submitArgs('s3://out/retried/'));
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 2);
      expect((await runEmbedq(world.env, ['cancel', id])).code).toBe(0);
      world.emulator.setFaults({ latencyMs: { min: 100, median: 150, p99: 200 } });
      expect(await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id)).toMatchObject({ retried: true });
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await pool.close();
    }

    for (const output of ['s3://out/killed/', 's3://out/retried/']) {
      const out = await download(output);
      await expectExact(out.folder, FIRST, { ...PARAMETERS, dimension: 128 });
      const manifest = manifestOf(out.folder);
      expect(manifest.counts).toMatchObject({
        lines: FIRST.length, embedded: FIRST.length, new: second.deleted.length, changed: expectedChanged,
        unchanged: FIRST.length - second.deleted.length - expectedChanged, deleted: second.added.length,
        reused: FIRST.length - second.deleted.length - expectedChanged,
      });
      const upserts = await queryParquet(`SELECT id FROM read_parquet(${sqlString(path.join(out.folder, '_delta/upserts-*.parquet'))}) ORDER BY row`);
      expect(upserts.map((row) => row.id)).toEqual(FIRST.filter((doc) => second.deleted.includes(doc.id) || second.edited.includes(doc.id)).map((doc) => doc.id));
      const deletes = readFileSync(path.join(out.folder, '_delta/deletes.jsonl'), 'utf8').trim().split('\n').map((line) => (JSON.parse(line) as { id: string }).id);
      expect(deletes.sort()).toEqual([...second.added].sort());
    }
  }, 120_000);

  it('a leftover _delta/ makes an output non-empty; --overwrite removes it with the rest of the old run', async () => {
    await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'only-delta/_delta/deletes.jsonl', Body: '{"id":"x"}\n' }));
    const refused = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/only-delta/']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('OUTPUT_NOT_EMPTY');
    expect(refused.stderr).toContain('_delta/deletes.jsonl');

    world.emulator.setFaults({ latencyMs: { min: 2, median: 5, p99: 20 } });
    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      // The killed run's output has a delta; a plain re-run over it must not leave any of it.
      const rerun = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/killed/', '--overwrite', '--id-field', 'id', '--dimension', String(DIMENSION), '--wait']);
      expect(rerun.code, rerun.stderr).toBe(0);
    } finally {
      await pool.close();
    }
    const out = await download('s3://out/killed/');
    const manifest = manifestOf(out.folder);
    expect(manifest).not.toHaveProperty('delta');
    expect(manifest).not.toHaveProperty('reused_from');
    expect(out.keys).toEqual([...manifest.shards.map((shard) => shard.file), '_SUCCESS', '_errors.jsonl', '_manifest.json'].sort());
  });

  it('the previous output removed while a killed split restarts: the job fails clearly, retry embeds the rest, exact output without a delta', async () => {
    world.emulator.setFaults({ latencyMs: { min: 1_000, median: 1_200, p99: 1_500 } });
    const killed = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let rescuer: ReturnType<typeof spawnEmbedq> | undefined;
    let id = '';
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/docs/corpus.jsonl', '--out', 's3://out/vanishing/', '--reuse', 's3://out/retried/', '--id-field', 'id', '--dimension', '128', '--shard-rows', '200']);
      expect(submitted.code, submitted.stderr).toBe(0);
      id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 2);
      await stopProcess(killed, 'SIGKILL');
      expect((await world.services.corpora.get(id))!.state).toBe('running');
      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'out', Key: 'retried/_SUCCESS' }));
      world.emulator.setFaults({ latencyMs: { min: 2, median: 5, p99: 20 } });
      rescuer = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
      const failed = await waitForJob(world.services, id, undefined, 60_000);
      expect(failed.state).toBe('failed');
      expect(failed.errorCode).toBe('REUSE_UNAVAILABLE');
      expect(failed.error).toContain('s3://out/retried/: no _SUCCESS');
      expect(await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id)).toMatchObject({ retried: true });
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
      // Not "every line embedded": the shards written before the failure copied theirs.
      const status = await runEmbedq(world.env, ['status', id]);
      expect(status.stdout).toMatch(/^reuse {5}unavailable after [\d,]+ rows were reused; every other line embedded: .*no _SUCCESS/m);
    } finally {
      await stopProcess(killed, 'SIGKILL');
      if (rescuer) await stopProcess(rescuer);
    }
    const out = await download('s3://out/vanishing/');
    await expectExact(out.folder, second.docs, { ...PARAMETERS, dimension: 128 });
    const manifest = manifestOf(out.folder);
    expect(manifest.reuse_error).toContain('no _SUCCESS');
    expect(manifest.counts.reused).toBeGreaterThan(0); // the shards written before, with copied vectors
    expect(manifest).not.toHaveProperty('delta');
    expect(out.keys.some((key) => key.startsWith('_delta/'))).toBe(false);
  }, 120_000);
  it("the previous output's shards changed mid-run under the same manifest: the job fails, and its retry reuses nothing and writes no delta", async () => {
    // s3://out/dim128/ holds the second corpus at dimension 128 in shards of 500 rows.
    const shardBytes = async (file: string): Promise<Uint8Array> =>
      (await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: `dim128/${file}` }))).Body!.transformToByteArray();
    world.emulator.setFaults({ latencyMs: { min: 1_000, median: 1_200, p99: 1_500 } });
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/docs/third.jsonl', '--out', 's3://out/swapped/', '--reuse', 's3://out/dim128/', '--id-field', 'id', '--dimension', '128', '--shard-rows', '200']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      // Once the split has indexed the previous output, its first two shards swap contents (the
      // manifest, with the same row counts, stays as it was).
      await waitForJob(world.services, id, (record) => record.reusedFrom !== null);
      const [first, second] = [await shardBytes('part-00000.parquet'), await shardBytes('part-00001.parquet')];
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'dim128/part-00000.parquet', Body: second }));
      await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'dim128/part-00001.parquet', Body: first }));
      world.emulator.setFaults({ latencyMs: { min: 2, median: 5, p99: 20 } });
      const failed = await waitForJob(world.services, id, undefined, 60_000);
      expect(failed.state).toBe('failed');
      expect(failed.errorCode).toBe('REUSE_UNAVAILABLE');
      expect(failed.error).toMatch(/no longer holds the text this job matched .* embedq retry embeds the rest of the job without reusing it/);
      // Before, the retry indexed the changed shards and wrote a delta against them: deletes
      // missing, unchanged ids counted new.
      expect(await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id)).toMatchObject({ retried: true });
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await pool.close();
    }
    const out = await download('s3://out/swapped/');
    await expectExact(out.folder, FIRST, { ...PARAMETERS, dimension: 128 });
    const manifest = manifestOf(out.folder);
    expect(manifest.reuse_error).toMatch(/no longer holds the text this job matched/);
    expect(manifest).not.toHaveProperty('delta');
    expect(out.keys.some((key) => key.startsWith('_delta/'))).toBe(false);
  }, 120_000);
  it('plan --reuse --id-field reads the previous _errors.jsonl as the run does: with it missing, both say reuse is unavailable, for the same reason', async () => {
    await world.put('plan/corpus.jsonl', jsonl(FIRST.slice(0, 30)));
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const first = await runEmbedq(world.env, ['submit', 's3://corpus/plan/corpus.jsonl', '--out', 's3://out/plan-previous/', '--id-field', 'id', '--dimension', String(DIMENSION), '--wait']);
      expect(first.code, first.stderr).toBe(0);
      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'out', Key: 'plan-previous/_errors.jsonl' }));
      const reuseArgs = ['s3://corpus/plan/corpus.jsonl', '--reuse', 's3://out/plan-previous/', '--dimension', String(DIMENSION)];
      // Without --id-field neither reads it: every line is reused.
      const withoutIds = await runEmbedq(world.env, ['plan', ...reuseArgs, '--json']);
      expect(JSON.parse(withoutIds.stdout)).toMatchObject({ reused: 30, reuse_error: null });
      // Before, plan said "reuse 30 lines" while the run sent everything.
      const planned = await runEmbedq(world.env, ['plan', ...reuseArgs, '--id-field', 'id', '--json']);
      expect(planned.code, planned.stderr).toBe(0);
      const plan = JSON.parse(planned.stdout) as { reused: number; reuse_error: string | null };
      expect(plan).toMatchObject({ reused: 0, reuse_error: expect.stringMatching(/s3:\/\/out\/plan-previous\/_errors\.jsonl: unreadable/) as unknown });
      const run = await runEmbedq(world.env, ['submit', ...reuseArgs, '--id-field', 'id', '--out', 's3://out/plan-run/', '--wait']);
      expect(run.code, run.stderr).toBe(0);
      expect(manifestOf((await download('s3://out/plan-run/')).folder).reuse_error).toBe(plan.reuse_error);
    } finally {
      await pool.close();
    }
  });
});
