import { gzipSync } from 'node:zlib';

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { EmbedBatchPayload } from '../../jobs/payloads.js';
import { embedQueue, QUEUES } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { embedBatch } from '../../workers/embed-batch.js';
import { splitCorpus } from '../../workers/split-corpus.js';
import { startWorkers } from '../../workers/start-workers.js';
import { writeShard } from '../../workers/write-shard.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { downloadPrefix, removeFolder, startWorld, waitForJob, type World } from '../support/world.js';

const SHARD_ROWS = 30;
/** Six objects of 20 lines: rows 0–19, 20–39, … 100–119; shards of 30 rows: 0–29, 30–59, 60–89, 90–119. */
const OBJECTS = 6;
const LINES = 20;
const text = (object: number, line: number): string => `object ${object} line ${line}: the quick brown fox`;
const LARGE_LINES = 100;
const largeText = (line: number): string => `line ${line}: café 中文 ${'x'.repeat(line % 7)}`;

/**
 * A split that starts again (a worker stopped, died, or `embedq retry`) used to read the whole
 * corpus from its first byte to skip the written shards by row number; the handback on every
 * scale-down makes that routine. Now each object read to its end records the row after its last,
 * and a split that starts again checks the listed version of an object whose rows are all in
 * written shards instead of reading it (a GET). Steps run by hand, as BullMQ would call them.
 */
describe('a split that starts again steps over the objects already in written shards', () => {
  let world: World;
  const folders: string[] = [];
  const context = (): Parameters<typeof splitCorpus>[1] => ({ services: world.services, logger: world.services.logger, stopping: new AbortController().signal, priority: 0 });
  /** The corpus requests of the S3 client the steps use: `GetObject key`, `HeadObject key`. */
  const requests: string[] = [];

  const submit = (prefix: string): Promise<string> =>
    submitCorpusJob(
      { corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() },
      parseJobOptions({ input: `s3://corpus/${prefix}`, output: `s3://out/${prefix}`, shardRows: SHARD_ROWS, dimension: 64, outputType: 'dense' }),
    );
  /** Splits the job, then embeds and writes its first two shards (rows 0–59: objects 0, 1 and 2 whole). */
  const splitAndWriteTwoShards = async (id: string): Promise<void> => {
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const queued = await world.services.queues[embedQueue('text-embedding-v4')].getJobs(['waiting', 'prioritized', 'delayed'], 0, -1);
    const batches = queued.map((job) => EmbedBatchPayload.parse(job.data)).filter((payload) => payload.corpusJobId === id && payload.shard < 2);
    for (const payload of batches) await embedBatch(payload, context());
    for (const shard of [0, 1]) await writeShard({ v: 1, corpusJobId: id, generation: 0, shard }, context());
    expect(await world.services.corpora.ledger.writtenShards(id)).toEqual(new Set([0, 1]));
  };

  /** Runs workers until the job completes; its rows as DuckDB reads them back. */
  const finishAndRead = async (id: string, prefix: string): Promise<Array<Record<string, unknown>>> => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const record = await waitForJob(world.services, id);
      expect(record.state, record.error ?? '').toBe('completed');
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', prefix);
    folders.push(folder);
    return queryParquet(`SELECT row, source, line, text FROM read_parquet(${sqlString(`${folder}/part-*.parquet`)}) ORDER BY row`);
  };

  beforeAll(async () => {
    // No backpressure: the first split runs to its end before any shard is written.
    world = await startWorld({}, { EMBEDQ_MAX_OPEN_SHARDS: '100' });
    // One object of 100 lines (rows 0–99: shards 0–2 and part of 3), then one of 20; CRLF and
    // multi-byte text, so offsets count bytes. The same gzipped, which cannot be read from an offset.
    const large = Array.from({ length: LARGE_LINES }, (_, line) => `${largeText(line)}\r\n`).join('');
    const small = Array.from({ length: LINES }, (_, line) => `${text(1, line)}\n`).join('');
    await world.put('resume-mid/a.txt', large);
    await world.put('resume-mid/b.txt', small);
    await world.put('resume-mid-changed/a.txt', large);
    await world.put('resume-mid-changed/b.txt', small);
    await world.put('resume-mid-gz/a.txt.gz', gzipSync(large));
    await world.put('resume-mid-gz/b.txt', small);
    for (const prefix of ['resume/', 'resume-changed/']) {
      for (let object = 0; object < OBJECTS; object += 1) {
        await world.put(`${prefix}o-${object}.txt`, `${Array.from({ length: LINES }, (_, line) => text(object, line)).join('\n')}\n`);
      }
    }
    (await world.services.s3()).middlewareStack.add(
      (next, { commandName }) =>
        async (args) => {
          const { Bucket, Key, Range } = args.input as { Bucket?: string; Key?: string; Range?: string };
          if (Bucket === 'corpus' && Key && (commandName === 'GetObjectCommand' || commandName === 'HeadObjectCommand')) {
            requests.push(`${commandName.replace('Command', '')} ${Key}${Range ? ` ${Range}` : ''}`);
          }
          return next(args);
        },
      { step: 'initialize', name: 'countCorpusRequests' },
    );
  });
  afterAll(async () => {
    await world.close();
    for (const folder of folders) await removeFolder(folder);
  });

  it('reads only the objects not wholly written, checks the others by their listed version, and the output is exact', async () => {
    const id = await submit('resume/');
    await splitAndWriteTwoShards(id);
    expect(await world.services.corpora.pins.ends(id)).toEqual([20, 40, 60, 80, 100, 120]);

    requests.length = 0;
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const gets = requests.filter((request) => request.startsWith('GetObject')).sort();
    expect(gets).toEqual(['GetObject resume/o-3.txt', 'GetObject resume/o-4.txt', 'GetObject resume/o-5.txt']);
    // The others' versions come with the listing (S3 lists ETags): no request for them at all.
    expect(requests.filter((request) => request.startsWith('HeadObject'))).toEqual([]);
    const split = (await world.services.corpora.get(id))!;
    expect(split.totalLines).toBe(OBJECTS * LINES);
    expect(split.totalShards).toBe(4);

    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const record = await waitForJob(world.services, id);
      expect(record.state, record.error ?? '').toBe('completed');
      expect(record.rowsEmbedded).toBe(OBJECTS * LINES);
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'resume/');
    folders.push(folder);
    const rows = await queryParquet(`SELECT row, source, line, text FROM read_parquet(${sqlString(`${folder}/part-*.parquet`)}) ORDER BY row`);
    expect(rows).toEqual(
      Array.from({ length: OBJECTS * LINES }, (_, row) => {
        const object = Math.floor(row / LINES);
        return { row: BigInt(row), source: `resume/o-${object}.txt`, line: BigInt(row % LINES), text: text(object, row % LINES) };
      }),
    );
    // Dropped by finalize just after it marks the job completed.
    await expect.poll(() => world.services.redis.exists(world.services.corpora.keys.objectEnds(id)), { message: 'ends dropped at finalize', timeout: 5_000 }).toBe(0);
  });

  it('reads the object holding the first unwritten shard from that shard\'s first line (a ranged GET), and the output is exact', async () => {
    const id = await submit('resume-mid/');
    await splitAndWriteTwoShards(id);
    // Shard 2 starts at row 60: line 60 of a.txt, after 60 lines of `largeText` and CRLF.
    const offset = Array.from({ length: 60 }, (_, line) => Buffer.byteLength(`${largeText(line)}\r\n`)).reduce((sum, bytes) => sum + bytes, 0);
    expect(await world.services.corpora.pins.shardStart(id, 2)).toEqual({ object: 0, offset, line: 60 });

    requests.length = 0;
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    // b.txt, small, is read ahead: the order of the GETs is not the corpus order.
    expect([...requests].sort()).toEqual([`GetObject resume-mid/a.txt bytes=${offset}-`, 'GetObject resume-mid/b.txt']);
    expect((await world.services.corpora.get(id))!).toMatchObject({ totalLines: LARGE_LINES + LINES, totalShards: 4 });

    const rows = await finishAndRead(id, 'resume-mid/');
    expect(rows).toEqual(
      Array.from({ length: LARGE_LINES + LINES }, (_, row) =>
        row < LARGE_LINES
          ? { row: BigInt(row), source: 'resume-mid/a.txt', line: BigInt(row), text: largeText(row) }
          : { row: BigInt(row), source: 'resume-mid/b.txt', line: BigInt(row - LARGE_LINES), text: text(1, row - LARGE_LINES) },
      ),
    );
    // Dropped by finalize just after it marks the job completed.
    await expect.poll(() => world.services.redis.exists(world.services.corpora.keys.shardStarts(id)), { message: 'shard starts dropped at finalize', timeout: 5_000 }).toBe(0);
  });

  it('fails with INPUT_CHANGED, before any ranged GET, when the object holding the first unwritten shard was rewritten shorter', async () => {
    const id = await submit('resume-mid-changed/');
    await splitAndWriteTwoShards(id);
    await world.s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: 'resume-mid-changed/a.txt', Body: `${largeText(0)}\n` }));
    requests.length = 0;
    await expect(splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context())).rejects.toThrow(/resume-mid-changed\/a\.txt is not the object job/);
    expect(requests.filter((request) => request.startsWith('GetObject resume-mid-changed/a.txt'))).toEqual([]);
  });

  it('reads a gzipped object from its start again (no offsets in it), and the output is exact', async () => {
    const id = await submit('resume-mid-gz/');
    await splitAndWriteTwoShards(id);
    expect(await world.services.redis.hlen(world.services.corpora.keys.shardStarts(id))).toBe(0);
    requests.length = 0;
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    expect([...requests].sort()).toEqual(['GetObject resume-mid-gz/a.txt.gz', 'GetObject resume-mid-gz/b.txt']);
    const rows = await finishAndRead(id, 'resume-mid-gz/');
    expect(rows.map((row) => row.text)).toEqual([...Array.from({ length: LARGE_LINES }, (_, line) => largeText(line)), ...Array.from({ length: LINES }, (_, line) => text(1, line))]);
  });

  it('an object rewritten among those stepped over fails the job with INPUT_CHANGED, naming it', async () => {
    const id = await submit('resume-changed/');
    await splitAndWriteTwoShards(id);
    // Same length, other bytes: only its version tells.
    await world.s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: 'resume-changed/o-1.txt', Body: `${Array.from({ length: LINES }, (_, line) => text(9, line)).join('\n')}\n` }));
    requests.length = 0;
    await expect(splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context())).rejects.toThrow(/resume-changed\/o-1\.txt is not the object job/);
    expect(requests).not.toContain('GetObject resume-changed/o-1.txt');
  });
});
