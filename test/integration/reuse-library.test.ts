import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { tableToIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ReuseUnavailableError } from '../../src/errors.js';
import { encodeShard, shardTable } from '../../src/shards/encode-shard.js';
import { RowGroupBuilder } from '../../src/shards/row-group-builder.js';
import type { ShardRow } from '../../src/shards/shard-row.js';
import { openStore, parseLocation } from '../../src/storage/locations.js';
import { contentHash, contentKey, type ContentKeyParameters } from '../../src/reuse/content-key.js';
import { DELETES_FILE } from '../../src/output/layout.js';
import { writeDeletes } from '../../src/reuse/delta-writer.js';
import { PreviousErrorIds } from '../../src/reuse/previous-errors.js';
import { PreviousIndex } from '../../src/reuse/previous-index.js';
import { resolvePreviousOutput, type OpenLocation, type PreviousOutput } from '../../src/reuse/previous-output.js';
import { PreviousShardCopies, removeStaleShardCopies } from '../../src/reuse/previous-shards.js';
import type { PreviousBatch, PreviousRowVectors } from '../../src/reuse/previous-batch.js';
import { previousRows } from '../../src/reuse/previous-vectors.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { startS3rver, type TestS3 } from '../support/s3rver.js';
import { makeShardRows } from '../support/shard-rows.js';

/**
 * The reuse building blocks on real files: a previous output written with the real encoder (local
 * folder and s3rver), read back through its manifest, indexed from four columns, its vectors
 * copied out, and a delta written and read back by DuckDB.
 */
const DIMENSION = 16;
const PARAMETERS: ContentKeyParameters = { model: 'text-embedding-v4', dimension: DIMENSION, outputType: 'dense&sparse', textType: 'document', instruct: undefined, api: 'dashscope' };

interface Line {
  source: string;
  line: number;
  id: string | null;
  text: string;
}

/** 25 lines over two sources; the second output shard starts in the middle of b.jsonl. */
const LINES: Line[] = [
  ...Array.from({ length: 12 }, (_, i) => ({ source: '/corpus/a.jsonl', line: i, id: `a${i}`, text: `alpha ${i}` })),
  ...Array.from({ length: 13 }, (_, i) => ({ source: '/corpus/b.jsonl', line: i + 1, id: i === 5 ? null : `b${i}`, text: `beta ${i}` })),
];

function rowsOf(lines: Line[], firstRow: number, withHash = true): ShardRow[] {
  const vectors = makeShardRows(lines.length, { dimension: DIMENSION, firstRow });
  return lines.map((line, i) => ({ ...vectors[i]!, row: firstRow + i, ...line, contentHash: withHash ? contentHash(line.text, PARAMETERS) : null }));
}

/** A finished output: two Parquet shards (rows 0-14, 15-24), `_manifest.json`, an empty `_errors.jsonl`, `_SUCCESS`. */
async function writePreviousOutput(write: (key: string, body: Uint8Array | string) => Promise<void>, location: string, withHash = true): Promise<ShardRow[]> {
  const shards = [rowsOf(LINES.slice(0, 15), 0, withHash), rowsOf(LINES.slice(15), 15, withHash)];
  const entries = [];
  for (const [index, rows] of shards.entries()) {
    const file = `part-0000${index}.parquet`;
    const bytes = await encodeShard(rows, { dimension: DIMENSION, format: 'parquet' });
    await write(file, bytes);
    entries.push({ file, first_row: rows[0]!.row, last_row: rows.at(-1)!.row, rows: rows.length, bytes: bytes.length });
  }
  const manifest = { job_id: 'cj-previous', input: '/corpus/', output: location, model: PARAMETERS.model, dimension: DIMENSION, output_type: PARAMETERS.outputType, output_format: 'parquet', shards: entries };
  await write('_manifest.json', JSON.stringify(manifest));
  await write('_errors.jsonl', '');
  await write('_SUCCESS', '');
  return shards.flat();
}

describe('reuse library', () => {
  let folder: string;
  let s3: TestS3;
  const open: OpenLocation = (location) => openStore(parseLocation(location), s3.client);

  beforeAll(async () => {
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-reuse-'));
    s3 = await startS3rver();
    await s3.createBucket('out');
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
    await s3?.close();
  });

  const local = (name: string) => {
    const root = path.join(folder, name);
    return { root, write: (key: string, body: Uint8Array | string) => open(root).store.write(key, body) };
  };

  it('follows a schedule root to its last good output and indexes it by position, hash and id (S3, ranged reads)', async () => {
    const location = 's3://out/nightly/2026-11-28/';
    const put = (key: string, body: Uint8Array | string) => s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: `nightly/2026-11-28/${key}`, Body: body })).then(() => undefined);
    const written = await writePreviousOutput(put, location);
    await s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'nightly/_latest.json', Body: JSON.stringify({ output: location, job_id: 'cj-previous', finished_at: '2026-11-28T03:00:00Z', counts: {} }) }));

    const previous = await resolvePreviousOutput('s3://out/nightly/', open);
    expect(previous.location).toBe(location);
    const index = await PreviousIndex.build(previous);
    expect(index.size).toBe(LINES.length);

    // Same source, line and text: the row at that position.
    const key = (text: string, parameters = PARAMETERS) => contentKey(text, parameters);
    expect(index.match('/corpus/b.jsonl', 4, key('beta 3'))).toBe(15);
    expect(index.locate(15)).toEqual({ shard: 1, file: 'part-00001.parquet', rowInShard: 0 });
    // The same text moved to another line or file: found by hash.
    expect(index.match('/corpus/c.jsonl', 0, key('alpha 7'))).toBe(7);
    expect(index.match('/corpus/a.jsonl', 3, key('alpha 7'))).toBe(7);
    // Edited text, or other parameters: nothing to reuse.
    expect(index.match('/corpus/a.jsonl', 3, key('alpha 3 (edited)'))).toBe(-1);
    expect(index.match('/corpus/a.jsonl', 3, key('alpha 3', { ...PARAMETERS, dimension: 64 }))).toBe(-1);

    // The vectors of chosen rows, from both shards, exactly as written.
    const positions = [24, 0, 15, 7, 24];
    const vectors: PreviousRowVectors[] = [];
    const groups: number[][] = [];
    const copies = new PreviousShardCopies(previous);
    for await (const found of previousRows(copies, positions.map((position) => index.locate(position)))) {
      groups.push(found.map(({ ref }) => ref));
      for (const { ref, batch, at } of found) vectors[ref] = batch.row(at);
    }
    await copies.dispose();
    // A few hundred rows at a time, in file order (both shards here are one batch each).
    expect(groups).toEqual([[1, 3], [2, 0, 4]]);
    positions.forEach((position, i) => {
      expect(vectors[i]!.dense).toEqual(written[position]!.dense);
      expect(vectors[i]!.sparse).toEqual(written[position]!.sparse);
    });
    expect(() => index.locate(25)).toThrow(RangeError);
    expect(written[24]!.sparse!.length).toBeGreaterThan(0);
  });

  it('copies previous rows a batch at a time across row groups, nulls and empty lists included, from Parquet and Arrow shards', async () => {
    // 2,600 rows: Parquet row groups of 1,000/1,000/600, read 250 rows at a time.
    const rows = makeShardRows(2_600, { dimension: DIMENSION, sparseEntries: 4 }).map((row, i): ShardRow => ({
      ...row,
      dense: i % 11 === 5 ? null : row.dense,
      sparse: i % 13 === 6 ? null : row.sparse,
      contentHash: i % 17 === 8 ? null : contentHash(row.text, PARAMETERS),
    }));
    for (const format of ['parquet', 'arrow'] as const) {
      const { root, write } = local(`rows-${format}`);
      const file = `part-00000.${format}`;
      await write(file, await encodeShard(rows, { dimension: DIMENSION, format }));
      const manifest = { job_id: 'cj-rows', output_format: format, shards: [{ file, rows: rows.length }, { file, rows: rows.length }] };
      const previous = new PreviousShardCopies({ location: root, ...open(root), manifest } as unknown as PreviousOutput);
      // Out of order, repeated, both ends of each group, and the same file as a second shard.
      const wanted = [2_599, 0, 999, 1_000, 1_999, 2_000, 5, 6, 8, 250, 249, 1_000, 1_234].map((rowInShard) => ({ shard: 0, rowInShard }));
      wanted.push({ shard: 1, rowInShard: 17 });
      const seen: PreviousRowVectors[] = [];
      const groups: number[][] = [];
      // Copied as the shard writer copies them (a reused row straight from the read batch's buffers)
      // they must give the very Arrow data of the same rows decoded.
      const copied = new RowGroupBuilder(DIMENSION, wanted.length);
      const expected: ShardRow[] = [];
      const copy = (ref: number, batch: PreviousBatch, at: number): void => {
        const row = expected.length;
        const hash = Buffer.alloc(32, row);
        copied.appendReused({ batch, at, line: { row, source: `s${ref}`, line: ref, id: ref % 2 ? `id${ref}` : null, shard: 0, rowInShard: 0, hash, upsert: false } });
        const want = rows[wanted[ref]!.rowInShard]!;
        expected.push({ row, source: `s${ref}`, line: ref, id: ref % 2 ? `id${ref}` : null, text: want.text, dense: want.dense, sparse: want.sparse, contentHash: hash.toString('hex') });
      };
      for await (const found of previousRows(previous, wanted)) {
        groups.push(found.map(({ ref }) => wanted[ref]!.shard * 10_000 + wanted[ref]!.rowInShard));
        for (const { ref, batch, at } of found) {
          seen[ref] = batch.row(at);
          copy(ref, batch, at);
        }
      }
      expect(Buffer.from(tableToIPC(copied.finish())).equals(Buffer.from(tableToIPC(shardTable(expected, DIMENSION)))), format).toBe(true);
      // A batch at a time, in file order: rows 0-249, 250-499, 750-999, 1000-1249, ... and shard 1 last.
      expect(groups.flat(), format).toEqual([0, 5, 6, 8, 249, 250, 999, 1_000, 1_000, 1_234, 1_999, 2_000, 2_599, 10_017]);
      expect(groups.length, format).toBe(8);
      wanted.forEach(({ rowInShard }, i) => {
        const want = rows[rowInShard]!;
        const got = seen[i]!;
        expect({ text: got.text, contentHash: got.contentHash, sparse: got.sparse }, `${format} row ${rowInShard}`).toEqual({ text: want.text, contentHash: want.contentHash ?? null, sparse: want.sparse });
        expect(got.dense === null ? null : Array.from(got.dense), `${format} row ${rowInShard}`).toEqual(want.dense === null ? null : Array.from(want.dense));
      });
      expect(seen[6]!.dense).toBeNull();
      expect(seen[7]!.sparse).toBeNull();
      expect(seen[8]!.contentHash).toBeNull();

      await previous.dispose();
      // A row past the end, and a file that is not a shard: clear errors naming the file.
      const past = previousRows(previous, [{ shard: 0, rowInShard: 2_600 }]);
      await expect(past.next()).rejects.toThrow(new RegExp(`${file} has no row 2600`));
      await write(file, 'not a shard at all');
      await expect(previousRows(previous, [{ shard: 0, rowInShard: 0 }]).next()).rejects.toThrow(ReuseUnavailableError);
      await expect(previousRows(previous, [{ shard: 0, rowInShard: 0 }]).next()).rejects.toThrow(new RegExp(`${file} unreadable`));
      await previous.dispose();
    }
  });

  it('keeps previous-shard copies in a folder named by pid, removed by dispose, and removes those of dead workers', async () => {
    const { root, write } = local('copies-previous');
    await writePreviousOutput(write, root);
    const copies = new PreviousShardCopies(await resolvePreviousOutput(root, open));
    const first = await copies.localCopy(0);
    expect(path.basename(path.dirname(first))).toMatch(new RegExp(`^embedq-previous-${process.pid}-`));
    const second = await copies.localCopy(1);
    expect(existsSync(first)).toBe(false); // one copy at a time
    expect(existsSync(second)).toBe(true);
    // A copy this worker cannot write (here a directory in its place; in life a full TMPDIR) is
    // this worker's failure, retried: not the previous output's (REUSE_UNAVAILABLE fails the job).
    await mkdir(path.join(path.dirname(second), 'shard-0'));
    const unwritable = await copies.localCopy(0).then(() => undefined, (error: unknown) => error as Error);
    expect(unwritable).toBeInstanceOf(Error);
    expect(unwritable).not.toBeInstanceOf(ReuseUnavailableError);
    expect(unwritable!.message).toMatch(/could not copy previous shard part-00000\.parquet to .*shard-0: EISDIR/);
    await copies.dispose();
    expect(existsSync(path.dirname(second))).toBe(false);

    // A worker killed mid-shard leaves its folder: removed once its process is gone and it is old.
    const tmp = path.join(folder, 'tmp');
    const child = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => child.on('exit', resolve));
    const folderOf = async (name: string, ageMs: number): Promise<string> => {
      await mkdir(path.join(tmp, name, 'x'), { recursive: true });
      const when = new Date(Date.now() - ageMs);
      await utimes(path.join(tmp, name), when, when);
      return name;
    };
    const stale = await folderOf(`embedq-previous-${child.pid}-abc`, 3_600_000);
    const fresh = await folderOf(`embedq-previous-${child.pid}-def`, 1_000);
    const alive = await folderOf(`embedq-previous-${process.pid}-ghi`, 3_600_000);
    const other = await folderOf('something-else-1-x', 3_600_000);
    expect(await removeStaleShardCopies(tmp)).toEqual([stale]);
    expect((await readdir(tmp)).sort()).toEqual([alive, fresh, other].sort());
  });

  it('classifies ids as new, changed or unchanged and writes the delta', async () => {
    const { root, write } = local('delta-previous');
    await writePreviousOutput(write, root);
    const previous = await resolvePreviousOutput(root, open);
    const index = await PreviousIndex.build(previous);
    // This run: a0-a9 unchanged, a10 edited, a11 and b12 gone, b0-b11 unchanged, one new id.
    const current = [
      ...LINES.slice(0, 10).map((line) => ({ ...line })),
      { ...LINES[10]!, text: 'alpha 10, edited' },
      ...LINES.slice(12, 24).map((line) => ({ ...line })),
      { source: '/corpus/b.jsonl', line: 14, id: 'b-new', text: 'beta new' },
    ];
    const classes = current.filter((line) => line.id !== null).map((line) => [line.id, index.classifyId(line.id!, contentKey(line.text, PARAMETERS))]);
    expect(classes.filter(([, kind]) => kind === 'changed')).toEqual([['a10', 'changed']]);
    expect(classes.filter(([, kind]) => kind === 'new')).toEqual([['b-new', 'new']]);
    expect(classes.filter(([, kind]) => kind === 'unchanged')).toHaveLength(current.length - 3); // minus a10, b-new, the null id

    // Upserts are written by the shard thread beside each shard (test/integration/incremental.test.ts).
    const { root: outRoot } = local('delta-output');
    const output = open(outRoot);
    expect(await writeDeletes(output, index, await PreviousErrorIds.build(previous))).toBe(2);
    const deletes = (await readFile(path.join(outRoot, DELETES_FILE), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { id: string });
    expect(deletes).toEqual([{ id: 'a11' }, { id: 'b12' }]);
  });

  it('reports a missing, unfinished or corrupt previous output clearly', async () => {
    const expectReuseError = async (promise: Promise<unknown>, message: RegExp) => {
      const error = await promise.then(() => undefined, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(ReuseUnavailableError);
      expect((error as Error).message).toMatch(message);
    };
    const missing = path.join(folder, 'never-written');
    await expectReuseError(resolvePreviousOutput(missing, open), new RegExp(`${missing}: no _manifest.json or _latest.json; not an embedq output or schedule root`));

    // An --overwrite run writing the output: its first shards are there, its manifest not yet.
    const rewriting = local('rewriting');
    await rewriting.write('part-00000.parquet', 'x');
    await expectReuseError(resolvePreviousOutput(rewriting.root, open), /rewriting: no _manifest\.json yet; a run is writing this output \(its shards are there\), or stopped before it finished/);
    // Or only its scratch files so far.
    const starting = local('starting');
    await starting.write('_tmp/cj-starting/errors-00000.jsonl', 'x');
    await expectReuseError(resolvePreviousOutput(starting.root, open), /starting: no _manifest\.json yet; a run is writing this output/);

    const unfinished = local('unfinished');
    await writePreviousOutput(unfinished.write, unfinished.root);
    await rm(path.join(unfinished.root, '_SUCCESS'));
    await expectReuseError(resolvePreviousOutput(unfinished.root, open), /unfinished: no _SUCCESS, the run did not finish/);

    const corrupt = local('corrupt');
    await writePreviousOutput(corrupt.write, corrupt.root);
    await writeFile(path.join(corrupt.root, '_manifest.json'), '{"job_id": "cj-previous", "shards": [');
    await expectReuseError(resolvePreviousOutput(corrupt.root, open), /corrupt\/_manifest\.json: not valid JSON/);
    await writeFile(path.join(corrupt.root, '_manifest.json'), JSON.stringify({ job_id: 'x', output: corrupt.root, model: 'm', dimension: 16, output_type: 'dense', output_format: 'parquet' }));
    await expectReuseError(resolvePreviousOutput(corrupt.root, open), /corrupt\/_manifest\.json: shards: /);

    const root = local('bad-root');
    await root.write('_latest.json', '{"job_id": 7}');
    await expectReuseError(resolvePreviousOutput(root.root, open), /bad-root\/_latest\.json: not a valid pointer/);
    await root.write('_latest.json', JSON.stringify({ output: missing, job_id: 'cj-gone' }));
    await expectReuseError(resolvePreviousOutput(root.root, open), /never-written \(named by .*bad-root\/_latest\.json\): no _manifest\.json/);

    // The output _latest.json names, re-run by hand with --overwrite since: another job's rows, so a
    // delta against it would miss the ids deleted in between (before, it was followed silently).
    const rewritten = local('rewritten-root');
    const rewrittenOutput = path.join(rewritten.root, 'run-2');
    await writePreviousOutput((key, body) => open(rewrittenOutput).store.write(key, body), rewrittenOutput);
    await rewritten.write('_latest.json', JSON.stringify({ output: rewrittenOutput, job_id: 'cj-published' }));
    await expectReuseError(
      resolvePreviousOutput(rewritten.root, open),
      /rewritten-root\/run-2: .*rewritten-root\/_latest\.json names job cj-published there, but the output was since rewritten by job cj-previous/,
    );

    // A root whose _latest.json names the output this job writes (an --overwrite run into it): said
    // as such; it said "no _manifest.json …; not an embedq output" once the run had cleared it.
    const ownRoot = local('own-root');
    const ownOutput = path.join(ownRoot.root, '2026-12-01');
    await ownRoot.write('_latest.json', JSON.stringify({ output: ownOutput, job_id: 'cj-last' }));
    await expectReuseError(
      resolvePreviousOutput(ownRoot.root, open, { output: `${ownOutput}/` }),
      new RegExp(`own-root/_latest\\.json names this job's own output ${ownOutput}/, which the job replaces; not followed`),
    );

    const lostShard = local('lost-shard');
    await writePreviousOutput(lostShard.write, lostShard.root);
    await rm(path.join(lostShard.root, 'part-00001.parquet'));
    await expectReuseError(PreviousIndex.build(await resolvePreviousOutput(lostShard.root, open)), /lost-shard: shard part-00001\.parquet unreadable/);

    const truncated = local('truncated-shard');
    await writePreviousOutput(truncated.write, truncated.root);
    const shardFile = path.join(truncated.root, 'part-00000.parquet');
    await writeFile(shardFile, (await readFile(shardFile)).subarray(0, 100));
    await expectReuseError(PreviousIndex.build(await resolvePreviousOutput(truncated.root, open)), /truncated-shard: shard part-00000\.parquet unreadable/);

    const old = local('no-hashes');
    await writePreviousOutput(old.write, old.root, false);
    await expectReuseError(PreviousIndex.build(await resolvePreviousOutput(old.root, open)), /no-hashes: no row has a content_hash/);

    // A manifest counting fewer rows than its shard holds: the check ran inside hyparquet's chunk
    // callback, whose rejection hyparquet drops, and the unhandled rejection killed every worker.
    const fewer = local('fewer-rows');
    await writePreviousOutput(fewer.write, fewer.root);
    const manifest = JSON.parse(await readFile(path.join(fewer.root, '_manifest.json'), 'utf8')) as { shards: { rows: number }[] };
    manifest.shards[0]!.rows = 10;
    await writeFile(path.join(fewer.root, '_manifest.json'), JSON.stringify(manifest));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await expectReuseError(PreviousIndex.build(await resolvePreviousOutput(fewer.root, open)), /fewer-rows: shard part-00000\.parquet unreadable: more rows than the manifest's 10/);
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
  });

  it('writes one delete per id gone, also for an id the previous output had on two rows', async () => {
    const { root, write } = local('twice');
    const ids = ['x', 'y', 'x', 'z', 'y', 'w'];
    const rows = ids.map((id, i): ShardRow => ({ row: i, source: '/corpus/t.jsonl', line: i, id, text: `text ${i}`, dense: null, sparse: null, contentHash: contentHash(`text ${i}`, PARAMETERS) }));
    await write('part-00000.parquet', await encodeShard(rows, { dimension: DIMENSION, format: 'parquet' }));
    await write('_manifest.json', JSON.stringify({ job_id: 'x', output: root, model: PARAMETERS.model, dimension: DIMENSION, output_type: 'dense', output_format: 'parquet', shards: [{ file: 'part-00000.parquet', first_row: 0, last_row: 5, rows: 6, bytes: 0 }] }));
    await write('_errors.jsonl', '');
    await write('_SUCCESS', '');
    const previous = await resolvePreviousOutput(root, open);
    const index = await PreviousIndex.build(previous);
    expect(index.classifyId('w', contentKey('text 5', PARAMETERS))).toBe('unchanged');
    const { root: outRoot } = local('twice-output');
    // x, y and z are gone: three deletes, in the previous output's order (it wrote x and y twice).
    expect(await writeDeletes(open(outRoot), index, await PreviousErrorIds.build(previous))).toBe(3);
    expect((await readFile(path.join(outRoot, DELETES_FILE), 'utf8')).trim().split('\n')).toEqual(['{"id":"x"}', '{"id":"y"}', '{"id":"z"}']);
  });

  it('the ids of refused lines in _errors.jsonl count as ids of the previous output for the deletes', async () => {
    const { root, write } = local('refused');
    await writePreviousOutput(write, root);
    const record = (row: number, id: string | undefined, code: string): string => `${JSON.stringify({ row, source: '/corpus/c.jsonl', line: row, ...(id ? { id } : {}), code, message: 'm' })}\n`;
    await write('_errors.jsonl', [
      record(25, 'r-gone', 'CONTENT_REJECTED'),
      record(26, 'r-back', 'PROVIDER_REJECTED'),
      record(27, 'r-gone', 'CONTENT_REJECTED'), // the same id twice: one delete
      record(28, 'too-long', 'TEXT_TOO_LONG'), // refused on reading: that run listed it in its deletes already
      record(29, undefined, 'CONTENT_REJECTED'), // no id (no --id-field, or written before records had ids)
      record(30, 'a11', 'CONTENT_REJECTED'), // also a row's id: deleted with the rows, once
    ].join(''));
    const previous = await resolvePreviousOutput(root, open);
    const index = await PreviousIndex.build(previous);
    const errorIds = await PreviousErrorIds.build(previous);
    for (const line of LINES.filter((line) => line.id !== 'a11')) if (line.id !== null) index.classifyId(line.id, contentKey(line.text, PARAMETERS));
    expect(errorIds.see('r-back')).toBe(true);
    expect(errorIds.see('too-long')).toBe(false);
    expect(errorIds.see('never-there')).toBe(false);
    const { root: outRoot } = local('refused-output');
    expect(await writeDeletes(open(outRoot), index, errorIds)).toBe(2);
    expect((await readFile(path.join(outRoot, DELETES_FILE), 'utf8')).trim().split('\n')).toEqual(['{"id":"a11"}', '{"id":"r-gone"}']);

    // The manifest counts its failed lines, one record each: a file cut at a line boundary, or
    // emptied, still parses, but the ids it lost would never be deleted (before, it was accepted).
    const manifestFile = path.join(root, '_manifest.json');
    await writeFile(manifestFile, JSON.stringify({ ...JSON.parse(await readFile(manifestFile, 'utf8')), counts: { failed: 6 } }));
    const counted = await resolvePreviousOutput(root, open);
    expect((await PreviousErrorIds.build(counted)).see('r-back')).toBe(true);
    const records = await readFile(path.join(root, '_errors.jsonl'), 'utf8');
    for (const [cut, found] of [[records.split('\n').slice(0, 4).join('\n'), 4], ['', 0]] as const) {
      await writeFile(path.join(root, '_errors.jsonl'), cut);
      const error = await PreviousErrorIds.build(counted).then(() => undefined, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(ReuseUnavailableError);
      expect((error as Error).message).toMatch(new RegExp(`refused/_errors\\.jsonl: ${found} error records, but the manifest counts 6 failed lines; the file was cut short or replaced`));
    }

    // _SUCCESS vouches for _errors.jsonl: without it the ids of refused lines are unknown.
    await rm(path.join(root, '_errors.jsonl'));
    const error = await PreviousErrorIds.build(previous).then(() => undefined, (caught: unknown) => caught);
    expect(error).toBeInstanceOf(ReuseUnavailableError);
    expect((error as Error).message).toMatch(/refused\/_errors\.jsonl: unreadable/);
  });

  it('finds every one of 5,000 rows by hash and by id (the radix-sorted lookups)', async () => {
    const { root, write } = local('many');
    const lines = Array.from({ length: 5_000 }, (_, i) => ({ source: `/corpus/${i % 3}.txt`, line: i, id: `id-${(i * 7919) % 5_000}`, text: `text number ${i}` }));
    const rows = lines.map((line, i): ShardRow => ({ row: i, ...line, dense: null, sparse: null, contentHash: contentHash(line.text, PARAMETERS) }));
    await write('part-00000.parquet', await encodeShard(rows, { dimension: DIMENSION, format: 'parquet' }));
    await write('_manifest.json', JSON.stringify({ job_id: 'x', output: root, model: PARAMETERS.model, dimension: DIMENSION, output_type: 'dense', output_format: 'parquet', shards: [{ file: 'part-00000.parquet', first_row: 0, last_row: 4_999, rows: 5_000, bytes: 0 }] }));
    await write('_SUCCESS', '');
    const index = await PreviousIndex.build(await resolvePreviousOutput(root, open));
    // Sources interleave here, so the position lookup goes through its sorted order too.
    const misses = lines.filter((line, i) => index.match('/elsewhere.txt', 0, contentKey(line.text, PARAMETERS)) !== i || index.match(line.source, line.line, contentKey(line.text, PARAMETERS)) !== i);
    expect(misses).toEqual([]);
    expect(index.findHash(contentKey('text number 5000', PARAMETERS))).toBe(-1);
    const kinds = new Set(lines.map((line) => index.classifyId(line.id, contentKey(line.text, PARAMETERS))));
    expect([...kinds]).toEqual(['unchanged']);
    expect([...index.unseenIdPositions()]).toEqual([]);
  });
});
