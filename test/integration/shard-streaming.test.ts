import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buffer as streamBuffer } from 'node:stream/consumers';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { CorpusStore } from '../../jobs/corpus-store.js';
import { ShardBufferChangedError } from '../../jobs/job-errors.js';
import type { ErrorRecord } from '../../jobs/shard-buffer.js';
import { SHARD_SLICE_BATCHES, shardSliceBatches } from '../../jobs/shard-buffer-read.js';
import { parseJobOptions } from '../../src/job-options.js';
import { ReuseUnavailableError, StorageError } from '../../src/errors.js';
import type { PreviousOutput } from '../../src/reuse/previous-output.js';
import { PreviousShardCopies } from '../../src/reuse/previous-shards.js';
import { encodeReuseList, type ReusedLine } from '../../src/reuse/reuse-list.js';
import { BatchCodecError, decodeBatch, encodeBatch } from '../../src/shards/batch-codec.js';
import { encodeShard } from '../../src/shards/encode-shard.js';
import { ShardEncoder } from '../../src/shards/shard-encoder.js';
import type { ShardRow } from '../../src/shards/shard-row.js';
import { LocalObjectStore } from '../../src/storage/local-store.js';
import type { ObjectStore } from '../../src/storage/object-store.js';
import { S3ObjectStore } from '../../src/storage/s3-store.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { startS3rver, type TestS3 } from '../support/s3rver.js';
import { makeShardRows } from '../support/shard-rows.js';

/**
 * The shard writer's streaming path end to end, on real Redis, a real shard thread, s3rver and a
 * local folder: batches read from a shard buffer a slice at a time, encoded on the thread, and the
 * file streamed into the store. It must give the bytes of the whole-shard encoder, and a failure
 * in the middle must leave no file.
 */
describe('streaming a shard from its Redis buffer into a store', () => {
  const dimension = 256;
  const prefix = `ss${randomBytes(4).toString('hex')}`;
  const options = parseJobOptions({ input: 's3://corpus/x.txt', output: 's3://out/x/' });
  let redis: Redis;
  let corpora: CorpusStore;
  let s3: TestS3;
  let folder: string;
  const encoder = new ShardEncoder();

  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'));
    corpora = new CorpusStore(redis, prefix);
    s3 = await startS3rver();
    await s3.createBucket('shards');
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-shard-streaming-'));
  });
  afterAll(async () => {
    await encoder.close();
    await redis.quit();
    await s3?.close();
    await rm(folder, { recursive: true, force: true });
  });

  const stores = (): Array<[string, ObjectStore]> => [
    // Small parts, so a shard goes up as a real multipart upload of several parts.
    ['s3rver', new S3ObjectStore(s3.client, 'shards', { streamPartBytes: 5 * 1024 * 1024 })],
    ['local folder', new LocalObjectStore(folder)],
  ];

  /**
   * A complete shard buffer of `rows` stored through the embed step's own script, in batches of
   * 10 rows; batch 3 carries error records.
   */
  async function bufferShard(id: string, rows: readonly ShardRow[]): Promise<{ batches: Buffer[]; errors: ErrorRecord[] }> {
    await corpora.jobs.create(id, options);
    await corpora.jobs.markRunning(id, 0);
    const batches: Buffer[] = [];
    for (let index = 0; index < rows.length; index += 10) batches.push(encodeBatch(rows.slice(index, index + 10), dimension));
    const errors: ErrorRecord[] = [{ row: 31, source: 'x.txt', line: 31, code: 'PROVIDER_REJECTED', message: 'too long' }];
    await corpora.buffers.closeShard(id, 0, 0, { expectedBatches: batches.length, blank: 0, truncated: 0, inputErrors: [], firstRow: 0, lastRow: rows.length - 1 });
    for (const [batch, encoded] of batches.entries()) {
      const batchErrors = batch === 3 ? errors : [];
      await corpora.buffers.storeBatch(id, 0, 0, batch, encoded, batchErrors, { embedded: 10, tokens: 1, rejected: 0, shardRows: rows.length });
    }
    return { batches, errors };
  }

  it('gives the whole-shard bytes, in several chunks and multipart parts, and a file DuckDB reads back', async () => {
    // ~12 MB: three 5 MiB parts on S3, several row groups, many slices.
    const rows = makeShardRows(6_000, { dimension, sparseEntries: 200 });
    const { batches, errors } = await bufferShard('cj-whole', rows);
    expect(batches.length).toBeGreaterThan(SHARD_SLICE_BATCHES * 3);
    const summary = await corpora.buffers.summary('cj-whole', 0);
    expect(summary).toMatchObject({ done: batches.length, expected: batches.length });
    // The whole-shard path: every batch of the hash at once, decoded, sorted, encoded whole.
    const whole = await encodeShard(batches.flatMap((batch) => decodeBatch(batch)), { dimension, format: 'parquet' });
    expect(whole.byteLength).toBeGreaterThan(10 * 1024 * 1024);

    for (const [name, store] of stores()) {
      const read: ErrorRecord[] = [];
      let chunks = 0;
      const result = await encoder.encode(corpora.buffers.batches('cj-whole', 0, summary!.expected!, read, dimension), { dimension, format: 'parquet' }, async (file) => {
        async function* counting(): AsyncGenerator<Uint8Array> {
          for await (const chunk of file) {
            chunks += 1;
            yield chunk;
          }
        }
        return store.writeStream('part-00000.parquet', counting());
      });
      expect(result, name).toEqual({ rows: rows.length, bytes: whole.byteLength, upserts: undefined });
      // The thread gave each slice's buffer back once done with it, and later slices went into them.
      const { slices, reused } = encoder.lastShardSlices;
      expect(slices, name).toBe(Math.ceil(batches.length / SHARD_SLICE_BATCHES));
      expect([dimension, 1024, 2048].map(shardSliceBatches)).toEqual([SHARD_SLICE_BATCHES, SHARD_SLICE_BATCHES, SHARD_SLICE_BATCHES / 2]);
      expect(reused, name).toBeGreaterThanOrEqual(slices - 3);
      // The thread names itself by its OS thread id: a thread of this process, not the main one.
      if (process.platform === 'linux') {
        const tid = encoder.lastThreadMemory?.osThreadId;
        expect(tid, name).not.toBe(process.pid);
        expect(existsSync(`/proc/${process.pid}/task/${tid}`), name).toBe(true);
      }
      expect(chunks, name).toBeGreaterThan(2);
      expect(read, name).toEqual(errors);
      const stored = await streamBuffer(await store.read('part-00000.parquet'));
      expect(Buffer.compare(stored, Buffer.from(whole)), name).toBe(0);
    }
    const local = path.join(folder, 'part-00000.parquet');
    const counted = await queryParquet(`SELECT count(*) AS n, sum(len(sparse)) AS entries FROM read_parquet(${sqlString(local)})`);
    expect(counted[0]).toEqual({ n: BigInt(rows.length), entries: BigInt(rows.reduce((sum, row) => sum + (row.sparse?.length ?? 0), 0)) });
  });

  it('a batch lost from the buffer mid-read fails the shard with ShardBufferChangedError and leaves no file; the thread goes on', async () => {
    const rows = makeShardRows(3_000, { dimension, sparseEntries: 200 });
    const { batches } = await bufferShard('cj-lost', rows);
    for (const [name, store] of stores()) {
      // Lost after the first slices were read and encoded: the file had begun to stream.
      async function* losing(): AsyncGenerator<Buffer[]> {
        let slices = 0;
        for await (const slice of corpora.buffers.batches('cj-lost', 0, batches.length, [], dimension)) {
          yield slice;
          slices += 1;
          if (slices === 4) await redis.hdel(corpora.keys.shard('cj-lost', 0), `b:${batches.length - 1}`);
        }
      }
      const failed = encoder.encode(losing(), { dimension, format: 'parquet' }, (file) => store.writeStream('lost/part-00000.parquet', file));
      await expect(failed, name).rejects.toThrow(ShardBufferChangedError);
      expect(await store.stat('lost/part-00000.parquet'), name).toBeUndefined();
      await redis.hset(corpora.keys.shard('cj-lost', 0), `b:${batches.length - 1}`, batches.at(-1)!);
    }
    expect(await readdir(folder, { recursive: true })).not.toContainEqual(expect.stringMatching(/\.tmp-/));
    // The thread was told to stop that shard and still encodes the next one.
    const result = await encoder.encode(corpora.buffers.batches('cj-lost', 0, batches.length, [], dimension), { dimension, format: 'parquet' }, (file) =>
      new LocalObjectStore(folder).writeStream('after.parquet', file),
    );
    expect(result.rows).toBe(rows.length);
    expect((await readFile(path.join(folder, 'after.parquet'))).byteLength).toBe(result.bytes);
  });

  it('a batch that does not decode fails the shard with BATCH_CORRUPT, not retried (before: a plain error, retried 14 times)', async () => {
    const rows = makeShardRows(300, { dimension, sparseEntries: 20 });
    const { batches } = await bufferShard('cj-corrupt', rows);
    await redis.hset(corpora.keys.shard('cj-corrupt', 0), 'b:1', batches[1]!.subarray(0, batches[1]!.length - 5));
    const failed = encoder.encode(corpora.buffers.batches('cj-corrupt', 0, batches.length, [], dimension), { dimension, format: 'parquet' }, (file) =>
      new LocalObjectStore(folder).writeStream('corrupt.parquet', file),
    );
    await expect(failed).rejects.toThrow(BatchCodecError);
    await expect(failed).rejects.toMatchObject({ code: 'BATCH_CORRUPT', retryable: false, message: expect.stringMatching(/truncated/) });
  });

  it('a store that fails mid-upload fails the shard with its StorageError and stops the thread’s work', async () => {
    const rows = makeShardRows(3_000, { dimension, sparseEntries: 200 });
    const { batches } = await bufferShard('cj-store', rows);
    const missingBucket = new S3ObjectStore(s3.client, 'no-such-bucket', { streamPartBytes: 5 * 1024 * 1024 });
    const failed = encoder.encode(corpora.buffers.batches('cj-store', 0, batches.length, [], dimension), { dimension, format: 'parquet' }, (file) =>
      missingBucket.writeStream('part-00000.parquet', file),
    );
    await expect(failed).rejects.toThrow(StorageError);
    await expect(failed).rejects.toThrow(/no-such-bucket/);
    const result = await encoder.encode(corpora.buffers.batches('cj-store', 0, batches.length, [], dimension), { dimension, format: 'arrow' }, (file) =>
      new LocalObjectStore(folder).writeStream('after.arrow', file),
    );
    expect(result.rows).toBe(rows.length);
  });

  it('--reuse: the thread copies previous rows in, and fails with ReuseUnavailableError, leaving no file, when one no longer matches', async () => {
    // A previous output of 1,500 rows; this shard embeds rows 100-109 and reuses the rest.
    const previousRows = makeShardRows(1_500, { dimension, sparseEntries: 20 }).map((row) => ({ ...row, contentHash: createHash('sha256').update(row.text).digest('hex') }));
    const local = new LocalObjectStore(folder);
    await local.write('previous/part-00000.parquet', await encodeShard(previousRows, { dimension, format: 'parquet' }));
    const manifest = { output_format: 'parquet', shards: [{ file: 'part-00000.parquet', rows: previousRows.length }] };
    const previous = (): PreviousShardCopies => new PreviousShardCopies({ location: `${folder}/previous/`, store: local, prefix: 'previous/', manifest } as unknown as PreviousOutput);
    const embedded = previousRows.slice(100, 110).map((row) => ({ ...row, text: `${row.text} (edited)` }));
    const { batches } = await bufferShard('cj-reuse', embedded);
    const lines = (changedRow?: number): ReusedLine[] =>
      previousRows
        .filter((row) => row.row < 100 || row.row >= 110)
        .map((row) => ({ row: row.row, source: row.source, line: row.line, id: row.id, shard: 0, rowInShard: row.row, upsert: false, hash: Buffer.from(row.row === changedRow ? 'ff'.repeat(32) : row.contentHash, 'hex') }));
    const encode = (list: Buffer, key: string) =>
      encoder.encode(corpora.buffers.batches('cj-reuse', 0, batches.length, [], dimension), { dimension, format: 'parquet', reuse: { list, previous: previous() } }, (file) => local.writeStream(key, file));

    const failed = encode(encodeReuseList(lines(1_234)), 'changed/part-00000.parquet');
    await expect(failed).rejects.toThrow(ReuseUnavailableError);
    await expect(failed).rejects.toThrow(/part-00000\.parquet row 1234 no longer holds the text this job matched for row 1234/);
    expect(existsSync(path.join(folder, 'changed/part-00000.parquet'))).toBe(false);

    const result = await encode(encodeReuseList(lines()), 'reused/part-00000.parquet');
    expect(result.rows).toBe(1_500);
    const read = await queryParquet(`SELECT row, text, dense FROM read_parquet(${sqlString(path.join(folder, 'reused/part-00000.parquet'))}) ORDER BY row`);
    expect(read.map((row) => row.text)).toEqual([...previousRows.slice(0, 100), ...embedded, ...previousRows.slice(110)].map((row) => row.text));
    expect(read[1_234]!.dense).toEqual(Array.from(previousRows[1_234]!.dense!));
  });
});
