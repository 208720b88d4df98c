import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { ErrorRecord } from '../../jobs/shard-records.js';
import type { EmbeddingParameters } from '../../src/embedding.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import type { Manifest } from '../../src/output/manifest.js';
import { startWorkers } from '../../workers/start-workers.js';
import { MODERATION_WORD } from '../support/corpus-fixture.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * The delta across a line the provider rejected: its id is in neither delta file of that run (the
 * store keeps its old vector), so the next run must still know the id, to list it in
 * `deletes.jsonl` once it is gone. Error records carry the line's id for that (and for the
 * operator). Real Redis, s3rver or a local folder, the emulator refusing `EMBEDQ_BLOCKED`, DuckDB.
 */
const DIMENSION = 64;
const PARAMETERS: EmbeddingParameters = { model: 'text-embedding-v4', dimension: DIMENSION, outputType: 'dense&sparse', textType: 'document', instruct: undefined, api: 'dashscope' };

interface Doc {
  id: string;
  text: string;
}

const jsonl = (docs: Doc[]): string => docs.map((doc) => JSON.stringify(doc)).join('\n');
const blocked = (text: string): string => `${text} ${MODERATION_WORD}`;

describe('the delta after rejected lines (an id in _errors.jsonl)', { timeout: 180_000 }, () => {
  let world: World;
  const folders: string[] = [];

  beforeAll(async () => {
    world = await startWorld({ seed: 11, faults: { latencyMs: { min: 2, median: 5, p99: 20 } } });
  });
  afterAll(async () => {
    await world?.close();
    for (const folder of folders) await removeFolder(folder);
  });

  /** The output's files, read from s3rver into a local folder, or the local folder itself. */
  const folderOf = async (output: string): Promise<string> => {
    if (!output.startsWith('s3://')) return output;
    const { folder } = await downloadPrefix(world.s3, 'out', output.replace('s3://out/', ''));
    folders.push(folder);
    return folder;
  };
  const manifestOf = (folder: string): Manifest => JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
  const errorsOf = (folder: string): ErrorRecord[] =>
    readFileSync(path.join(folder, '_errors.jsonl'), 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as ErrorRecord);
  const deletesOf = (folder: string): string[] =>
    readFileSync(path.join(folder, '_delta/deletes.jsonl'), 'utf8').split('\n').filter((line) => line !== '').map((line) => (JSON.parse(line) as { id: string }).id);
  const upsertsOf = async (folder: string): Promise<Array<{ id: string; text: string; dense: number[] }>> => {
    const manifest = manifestOf(folder);
    if (!manifest.delta || manifest.delta.upserts.length === 0) return [];
    const files = manifest.delta.upserts.map((file) => sqlString(path.join(folder, file))).join(', ');
    return (await queryParquet(`SELECT id, text, dense FROM read_parquet([${files}]) ORDER BY row`)) as Array<{ id: string; text: string; dense: number[] }>;
  };
  const submit = async (input: string, output: string, reuse: string | undefined, extra: string[] = []): Promise<Manifest> => {
    const args = ['submit', input, '--out', output, '--id-field', 'id', '--dimension', String(DIMENSION), ...(reuse ? ['--reuse', reuse] : []), ...extra, '--wait'];
    const submitted = await runEmbedq(world.env, args);
    expect(submitted.code, submitted.stderr).toBe(0);
    const manifest = manifestOf(await folderOf(output));
    if (reuse) expect(manifest.reuse_error).toBeNull();
    return manifest;
  };

  for (const where of ['s3', 'local'] as const) {
    it(`${where}: an id rejected in one run and gone in the next is listed in the next run's deletes`, async () => {
      const local = where === 'local' ? mkdtempSync(path.join(tmpdir(), 'embedq-delta-errors-')) : undefined;
      if (local) folders.push(local);
      const out = (name: string): string => (local ? path.join(local, name) : `s3://out/${where}-${name}/`);
      const dA: Doc[] = [
        { id: 'x', text: 'hello there' },
        { id: 'v', text: 'general kenobi' },
        { id: 'w', text: 'a walk in the woods' },
        { id: 'y', text: 'the river report' },
        { id: 'z', text: 'the market report' },
      ];
      // B: x, v and w rejected by the provider; the store keeps their vectors of A.
      const dB: Doc[] = dA.map((doc) => (['x', 'v', 'w'].includes(doc.id) ? { ...doc, text: blocked(doc.text) } : doc));
      // C: x removed, v back with a valid text, w still rejected.
      const dC: Doc[] = [{ id: 'v', text: 'general kenobi, again' }, { id: 'w', text: blocked('a walk in the woods') }, dA[3]!, dA[4]!];
      // D: only y and z are left.
      const dD: Doc[] = [dA[3]!, dA[4]!];
      for (const [name, docs] of [['a', dA], ['b', dB], ['c', dC], ['d', dD]] as const) await world.put(`${where}/${name}.jsonl`, jsonl(docs));
      const input = (name: string): string => `s3://corpus/${where}/${name}.jsonl`;

      const pool = startWorkers(world.services, { concurrency: 4 });
      try {
        await submit(input('a'), out('a'), undefined);

        const b = await submit(input('b'), out('b'), out('a'));
        const bFolder = await folderOf(out('b'));
        // The records say which id each rejected line had, so an operator can reconcile.
        expect.soft(errorsOf(bFolder).map((record) => ({ id: record.id, code: record.code, row: record.row }))).toEqual([
          { id: 'x', code: 'CONTENT_REJECTED', row: 0 },
          { id: 'v', code: 'CONTENT_REJECTED', row: 1 },
          { id: 'w', code: 'CONTENT_REJECTED', row: 2 },
        ]);
        // Unchanged: rejected ids are in neither file of B.
        expect(b.counts).toMatchObject({ failed: 3, changed: 3, unchanged: 2, new: 0, deleted: 0 });
        expect(await upsertsOf(bFolder)).toEqual([]);
        expect(deletesOf(bFolder)).toEqual([]);

        const c = await submit(input('c'), out('c'), out('b'));
        const cFolder = await folderOf(out('c'));
        // x is gone: listed, though B has no row of it. v is back: an upsert of its new vector.
        // w is still rejected: in neither file (the store keeps A's vector). The previous output
        // had v and w (as error records), so they count as changed, not new.
        expect(deletesOf(cFolder)).toEqual(['x']);
        const upserts = await upsertsOf(cFolder);
        expect(upserts.map((row) => ({ id: row.id, text: row.text }))).toEqual([{ id: 'v', text: 'general kenobi, again' }]);
        expect(upserts[0]!.dense).toEqual(Array.from(emulatorEmbedding('general kenobi, again', PARAMETERS).dense!));
        expect.soft(errorsOf(cFolder).map((record) => ({ id: record.id, code: record.code }))).toEqual([{ id: 'w', code: 'CONTENT_REJECTED' }]);
        expect(c.counts).toMatchObject({ lines: 4, embedded: 3, failed: 1, new: 0, changed: 2, unchanged: 2, deleted: 1 });

        // D: v (a row of C) and w (rejected in B and C, A's vector still in the store) are gone.
        const d = await submit(input('d'), out('d'), out('c'));
        const dFolder = await folderOf(out('d'));
        expect(deletesOf(dFolder)).toEqual(['v', 'w']);
        expect(await upsertsOf(dFolder)).toEqual([]);
        expect(d.counts).toMatchObject({ failed: 0, new: 0, changed: 0, unchanged: 2, deleted: 2 });
      } finally {
        await pool.close();
      }
    });
  }

  it('an id too long in both runs stays out of the deletes; rejected, then too long, it is deleted', async () => {
    const long = (word: string): string => Array.from({ length: 9_000 }, (_, i) => `${word}${i % 10}`).join(' ');
    const dA: Doc[] = [{ id: 'p', text: 'plain text' }, { id: 'q', text: 'quiet text' }, { id: 'k', text: 'kept text' }];
    // B: p too long (no row, deleted in B's delta as before), q rejected (the store keeps A's vector).
    const dB: Doc[] = [{ id: 'p', text: long('p') }, { id: 'q', text: blocked('quiet text') }, dA[2]!];
    // C: p still too long (already deleted by B: not again), q now too long (no row: deleted).
    const dC: Doc[] = [{ id: 'p', text: long('p') }, { id: 'q', text: long('q') }, dA[2]!];
    for (const [name, docs] of [['a', dA], ['b', dB], ['c', dC]] as const) await world.put(`long/${name}.jsonl`, jsonl(docs));
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const extra = ['--long-lines', 'error'];
      await submit('s3://corpus/long/a.jsonl', 's3://out/long-a/', undefined, extra);
      await submit('s3://corpus/long/b.jsonl', 's3://out/long-b/', 's3://out/long-a/', extra);
      const bFolder = await folderOf('s3://out/long-b/');
      expect.soft(errorsOf(bFolder).map((record) => ({ id: record.id, code: record.code }))).toEqual([
        { id: 'p', code: 'TEXT_TOO_LONG' },
        { id: 'q', code: 'CONTENT_REJECTED' },
      ]);
      expect(deletesOf(bFolder)).toEqual(['p']);
      const c = await submit('s3://corpus/long/c.jsonl', 's3://out/long-c/', 's3://out/long-b/', extra);
      expect(deletesOf(await folderOf('s3://out/long-c/'))).toEqual(['q']);
      expect(c.counts).toMatchObject({ failed: 2, unchanged: 1, deleted: 1 });
    } finally {
      await pool.close();
    }
  });

  it('a worker SIGKILLed mid incremental run: the rejected ids gone since are all in the deletes', async () => {
    const SHARD_ROWS = 100;
    const first: Doc[] = Array.from({ length: 1_000 }, (_, i) => ({ id: `d${i}`, text: `Document ${i} about the ${['river', 'orbit', 'ledger'][i % 3]} number ${i * 7}.` }));
    const rejected = first.filter((_, i) => i % 10 === 3).map((doc) => doc.id);
    const edited = first.filter((_, i) => i % 10 === 5).map((doc) => doc.id);
    const second = first.map((doc) => (rejected.includes(doc.id) ? { ...doc, text: blocked(doc.text) } : doc));
    // The third corpus drops every rejected id and edits a line in each ten, so every shard sends requests.
    const third = first.filter((doc) => !rejected.includes(doc.id)).map((doc) => (edited.includes(doc.id) ? { ...doc, text: `${doc.text} (revised)` } : doc));
    for (const [name, docs] of [['first', first], ['second', second], ['third', third]] as const) await world.put(`killed/${name}.jsonl`, jsonl(docs));
    const extra = ['--shard-rows', String(SHARD_ROWS)];

    const pool = startWorkers(world.services, { concurrency: 8 });
    try {
      await submit('s3://corpus/killed/first.jsonl', 's3://out/killed-first/', undefined, extra);
      const b = await submit('s3://corpus/killed/second.jsonl', 's3://out/killed-second/', 's3://out/killed-first/', extra);
      expect(b.counts).toMatchObject({ failed: rejected.length, deleted: 0 });
    } finally {
      await pool.close();
    }

    // Slow answers, so the run is still going when a shard or two are written; then SIGKILL.
    world.emulator.setFaults({ latencyMs: { min: 1_000, median: 1_200, p99: 1_500 } });
    const killed = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let rescuer: ReturnType<typeof spawnEmbedq> | undefined;
    try {
      const submitted = await runEmbedq(world.env, [
        'submit', 's3://corpus/killed/third.jsonl', '--out', 's3://out/killed-third/', '--reuse', 's3://out/killed-second/', '--id-field', 'id', '--dimension', String(DIMENSION), ...extra,
      ]);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 2);
      await stopProcess(killed, 'SIGKILL');
      const midway = (await world.services.corpora.get(id))!;
      expect(midway.state).toBe('running');
      expect(midway.shardsWritten).toBeLessThan(third.length / SHARD_ROWS);
      world.emulator.setFaults({ latencyMs: { min: 2, median: 5, p99: 20 } });
      rescuer = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await stopProcess(killed, 'SIGKILL');
      if (rescuer) await stopProcess(rescuer);
    }
    const folder = await folderOf('s3://out/killed-third/');
    const manifest = manifestOf(folder);
    expect(manifest.reuse_error).toBeNull();
    expect(deletesOf(folder).sort()).toEqual([...rejected].sort());
    expect((await upsertsOf(folder)).map((row) => row.id)).toEqual(edited);
    expect(manifest.counts).toMatchObject({ lines: third.length, embedded: third.length, failed: 0, changed: edited.length, deleted: rejected.length });
  }, 180_000);
});
