import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { queryParquet, sqlString } from '../support/duckdb.js';
import { downloadPrefix, removeFolder, runEmbedq, spawnEmbedq, startWorld, stopProcess, waitForJob, type World } from '../support/world.js';

/**
 * A split that starts again (its worker stopped or died, Redis restarted, `embedq retry`) reads
 * the corpus from the start and skips the shards already written, by row number. If an object was
 * rewritten meanwhile, its rows would shift under the written shards: lines lost or doubled,
 * silently. The job must fail instead, naming the object.
 */
describe('a corpus that changes while its job runs', () => {
  let world: World;
  const folders: string[] = [];
  const lines = (name: string, count: number): string =>
    `${Array.from({ length: count }, (_, index) => `${name} line ${index}: the quick brown fox jumps over the lazy dog`).join('\n')}\n`;

  beforeAll(async () => {
    world = await startWorld({ seed: 5, faults: { latencyMs: { min: 300, median: 400, p99: 500 } } });
  });
  afterAll(async () => {
    await world.close();
    for (const folder of folders) await removeFolder(folder);
  });

  /**
   * Submits `s3://corpus/<prefix>` (or another input) into `s3://out/<prefix>`, stops the first
   * worker (SIGTERM) once a shard is written and the split is waiting for room, runs `change`, then
   * lets a second worker go on.
   */
  const interrupted = async (
    prefix: string,
    change: () => Promise<void>,
    locations = { input: `s3://corpus/${prefix}`, output: `s3://out/${prefix}` },
  ): Promise<{ id: string; state: string; errorCode: string | null; error: string | null }> => {
    const first = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let second: ReturnType<typeof spawnEmbedq> | undefined;
    try {
      const submitted = await runEmbedq(world.env, ['submit', locations.input, '--out', locations.output, '--shard-rows', '40', '--dimension', '64', '--output-type', 'dense']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      const before = await waitForJob(world.services, id, (record) => record.shardsWritten >= 1);
      expect(before.totalLines, 'the split is still running').toBeNull();
      await stopProcess(first, 'SIGTERM');
      await change();
      world.emulator.setFaults({ latencyMs: { min: 20, median: 40, p99: 80 } });
      second = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
      const record = await waitForJob(world.services, id, undefined, 60_000);
      return { id, state: record.state, errorCode: record.errorCode, error: record.error };
    } finally {
      await stopProcess(first, 'SIGKILL');
      if (second) await stopProcess(second, 'SIGKILL');
      world.emulator.setFaults({ latencyMs: { min: 300, median: 400, p99: 500 } });
    }
  };

  it('an object rewritten with a line inserted before the written rows: the job fails with INPUT_CHANGED naming it, no _SUCCESS, and a retry waits for the object put back', async () => {
    await world.put('rewritten/a.txt', lines('a', 200));
    await world.put('rewritten/b.txt', lines('b', 100));
    const result = await interrupted('rewritten/', () => world.put('rewritten/a.txt', `a new first line\n${lines('a', 200)}`));
    expect(result.state, result.error ?? '').toBe('failed');
    expect(result.errorCode).toBe('INPUT_CHANGED');
    expect(result.error).toContain('rewritten/a.txt');
    const { folder, keys } = await downloadPrefix(world.s3, 'out', 'rewritten/');
    folders.push(folder);
    expect(keys).not.toContain('_SUCCESS');

    // A retry over the corpus still changed is refused, naming the object (before, it was accepted
    // and failed again as soon as its split ran); with the object put back as it was (S3's ETag
    // is the same again), it resumes to exact rows.
    const refused = await runEmbedq(world.env, ['retry', result.id]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`cannot retry ${result.id}: its input changed since it was read: rewritten/a.txt is not the object job ${result.id} read there before`);
    expect((await world.services.corpora.get(result.id))?.state).toBe('failed');
    await world.put('rewritten/a.txt', lines('a', 200));
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '8']);
    try {
      const retried = await runEmbedq(world.env, ['retry', result.id]);
      expect(retried.code, retried.stderr).toBe(0);
      expect((await waitForJob(world.services, result.id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
    const again = await downloadPrefix(world.s3, 'out', 'rewritten/');
    folders.push(again.folder);
    const rows = await queryParquet(`SELECT text FROM read_parquet(${sqlString(`${again.folder}/part-*.parquet`)}) ORDER BY row`);
    expect(rows.map((row) => row.text)).toEqual([...lines('a', 200).trimEnd().split('\n'), ...lines('b', 100).trimEnd().split('\n')]);
  });

  it('an object removed after the listing, before its read: the job fails naming it, and retry is refused while it is gone (it completed without its lines, with no record)', async () => {
    await world.put('unread/a.txt', lines('a', 200));
    const small = Array.from({ length: 20 }, (_, index) => `unread/b${String(index).padStart(2, '0')}.txt`);
    for (const key of small) await world.put(key, lines(key, 3));
    const last = small.at(-1)!;
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let id = '';
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/unread/', '--out', 's3://out/unread/', '--shard-rows', '40', '--dimension', '64', '--output-type', 'dense']);
      expect(submitted.code, submitted.stderr).toBe(0);
      id = submitted.stdout.trim();
      // Listed, and the split waits for room inside a.txt: the last small object is neither read nor fetched ahead.
      await waitForJob(world.services, id, (record) => record.shardsWritten >= 1);
      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: last }));
      const failed = await waitForJob(world.services, id, undefined, 60_000);
      expect(failed.state, failed.error ?? '').toBe('failed');
      expect(failed.errorCode).toBe('STORAGE_ERROR');
      expect(failed.error).toContain(`s3://corpus/${last}: no such object`);

      const refused = await runEmbedq(world.env, ['retry', id]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`cannot retry ${id}: it failed because s3://corpus/${last} was removed after the job listed it, and it is still gone`);
      expect((await world.services.corpora.get(id))?.state).toBe('failed');
      // Put back, the retry goes on to every line.
      await world.put(last, lines(last, 3));
      const retried = await runEmbedq(world.env, ['retry', id]);
      expect(retried.code, retried.stderr).toBe(0);
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
    } finally {
      await stopProcess(worker, 'SIGKILL');
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'unread/');
    folders.push(folder);
    const rows = await queryParquet(`SELECT text FROM read_parquet(${sqlString(`${folder}/part-*.parquet`)}) ORDER BY row`);
    expect(rows.map((row) => row.text)).toEqual([lines('a', 200), ...small.map((key) => lines(key, 3))].join('').trimEnd().split('\n'));
  });

  it('the first object removed: the one now in its place is named, and the job fails', async () => {
    await world.put('removed/a.txt', lines('a', 30));
    await world.put('removed/b.txt', lines('b', 200));
    const result = await interrupted('removed/', async () => {
      await world.s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: 'removed/a.txt' }));
    });
    expect(result.state, result.error ?? '').toBe('failed');
    expect(result.errorCode).toBe('INPUT_CHANGED');
    expect(result.error).toContain('removed/b.txt is not the object');
  });

  it('a local file rewritten in place (same inode, another size and time): the job fails naming it', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-input-changed-'));
    folders.push(folder);
    await mkdir(path.join(folder, 'in'));
    await writeFile(path.join(folder, 'in', 'a.txt'), lines('a', 200));
    await writeFile(path.join(folder, 'in', 'b.txt'), lines('b', 100));
    const result = await interrupted('local/', () => writeFile(path.join(folder, 'in', 'a.txt'), `a new first line\n${lines('a', 200)}`), {
      input: path.join(folder, 'in'),
      output: path.join(folder, 'out'),
    });
    expect(result.state, result.error ?? '').toBe('failed');
    expect(result.errorCode).toBe('INPUT_CHANGED');
    expect(result.error).toContain(`${path.join(folder, 'in')}/a.txt is not the object`);
  });

  it('unchanged, the corpus is read again to exact rows (the pins pass, and go at finalize)', async () => {
    await world.put('same/a.txt', lines('a', 200));
    await world.put('same/b.txt', lines('b', 100));
    const result = await interrupted('same/', async () => undefined);
    expect(result.state, result.error ?? '').toBe('completed');
    // Dropped by finalize just after it marks the job completed (what waitForJob sees).
    await expect.poll(() => world.services.redis.exists(world.services.corpora.keys.pins(result.id)), { message: 'pins dropped at finalize', timeout: 5_000 }).toBe(0);
    const { folder } = await downloadPrefix(world.s3, 'out', 'same/');
    folders.push(folder);
    const rows = await queryParquet(`SELECT text FROM read_parquet(${sqlString(`${folder}/part-*.parquet`)}) ORDER BY row`);
    expect(rows.map((row) => row.text)).toEqual([...lines('a', 200).trimEnd().split('\n'), ...lines('b', 100).trimEnd().split('\n')]);
  });
});
