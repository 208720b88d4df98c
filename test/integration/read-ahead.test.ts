import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { listCorpus, type CorpusObject } from '../../src/corpus/list-corpus.js';
import { readAhead } from '../../src/corpus/read-ahead.js';
import { readCorpusLines } from '../../src/corpus/read-lines.js';
import { StorageError } from '../../src/errors.js';
import { sleep } from '../../src/sleep.js';
import { startS3rver, type TestS3 } from '../support/s3rver.js';

const OPTIONS = { depth: 4, maxObjectBytes: 100 };
const key = (index: number): string => `docs/doc-${String(index).padStart(3, '0')}.txt`;

/**
 * Small objects are fetched ahead of the reader, through real s3rver with each GET held 20 ms (as
 * S3's latency would): in order, at most `depth` at once, large objects only when reached.
 */
describe('read-ahead of small corpus objects', () => {
  let s3: TestS3;
  /** GETs in flight now, the most at once, and each GET's key in the order they started. */
  const gets = { inFlight: 0, most: 0, started: [] as string[] };
  /** Keys whose lines the reader had finished when each GET started (by key). */
  const finishedWhenStarted = new Map<string, number>();
  let finished = 0;

  const read = async (objects: AsyncIterable<CorpusObject>): Promise<string[]> => {
    const lines: string[] = [];
    for await (const object of objects) {
      for await (const line of readCorpusLines(object)) if (line.kind === 'text') lines.push(line.text);
      finished += 1;
    }
    return lines;
  };

  beforeAll(async () => {
    s3 = await startS3rver();
    await s3.createBucket('corpus');
    for (let index = 0; index < 30; index += 1) {
      // doc-012 is larger than maxObjectBytes: it is streamed when its turn comes.
      const body = index === 12 ? `${'long line '.repeat(20)}\n`.repeat(3) : `line ${index}.0\nline ${index}.1\n`;
      await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: key(index), Body: body }));
    }
    s3.client.middlewareStack.add(
      (next, { commandName }) =>
        async (args) => {
          if (commandName !== 'GetObjectCommand') return next(args);
          const { Key } = args.input as { Key: string };
          gets.started.push(Key);
          finishedWhenStarted.set(Key, finished);
          gets.inFlight += 1;
          gets.most = Math.max(gets.most, gets.inFlight);
          try {
            await sleep(20);
            return await next(args);
          } finally {
            gets.inFlight -= 1;
          }
        },
      { step: 'initialize', name: 'slowGets' },
    );
  });
  afterAll(() => s3.close());

  it('gives every line in key order, with up to `depth` GETs at once and a large object fetched only when reached', async () => {
    const lines = await read(readAhead(listCorpus('s3://corpus/docs/', { s3Client: s3.client }), OPTIONS));
    const expected = Array.from({ length: 30 }, (_, index) =>
      index === 12 ? Array.from({ length: 3 }, () => 'long line '.repeat(20)) : [`line ${index}.0`, `line ${index}.1`],
    ).flat();
    expect(lines).toEqual(expected);
    expect(gets.started).toHaveLength(30);
    expect(gets.most).toBeGreaterThan(1);
    expect(gets.most).toBeLessThanOrEqual(OPTIONS.depth);
    // The large object's GET waited for the reader to finish every object before it.
    expect(finishedWhenStarted.get(key(12))).toBe(12);
    // The small ones ran ahead of the reader.
    expect(finishedWhenStarted.get(key(3))).toBe(0);
  });

  it('streams an object rewritten larger since it was listed, instead of holding it whole (a listing page is minutes old by its last keys)', async () => {
    await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: 'grown/doc.txt', Body: 'small\n' }));
    const listed: CorpusObject[] = [];
    for await (const object of listCorpus('s3://corpus/grown/', { s3Client: s3.client })) listed.push(object);
    const grown = 'a line of the grown object\n'.repeat(80_000); // 2.2 MB
    await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: 'grown/doc.txt', Body: grown }));
    for await (const object of readAhead((async function* () { yield* listed; })(), OPTIONS)) {
      expect(object.opened).toBeDefined();
      const chunks: Buffer[] = [];
      for await (const chunk of (await object.opened!).body) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe(grown);
      // What the fetch held before the reader came: up to the limit and one more network read.
      expect(chunks[0]!.length).toBeLessThan(1 << 20);
      expect(chunks.length).toBeGreaterThan(1);
    }
  });

  it('an object gone since the listing fails when the reader reaches it, after every line before it', async () => {
    const objects = readAhead(listCorpus('s3://corpus/docs/', { s3Client: s3.client }), OPTIONS);
    const lines: string[] = [];
    let failure: unknown;
    try {
      for await (const object of objects) {
        // Listed already (a page holds them all), and now removed: its fetch ahead fails.
        if (object.key === key(0)) await s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: key(20) }));
        for await (const line of readCorpusLines(object)) if (line.kind === 'text') lines.push(line.text);
      }
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(StorageError);
    expect((failure as Error).message).toContain(key(20));
    expect(lines.at(-1)).toBe('line 19.1');
    await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: key(20), Body: 'line 20.0\nline 20.1\n' }));
  });

  it('a reader that stops early leaves no failure unhandled, even of a fetch that failed meanwhile', async () => {
    const objects = readAhead(listCorpus('s3://corpus/docs/', { s3Client: s3.client }), OPTIONS);
    for await (const object of objects) {
      await s3.client.send(new DeleteObjectCommand({ Bucket: 'corpus', Key: key(2) }));
      await sleep(100); // the fetch of doc-002 has failed by now
      expect(object.key).toBe(key(0));
      break;
    }
    // vitest fails the run on an unhandled rejection; give one the time to surface.
    await sleep(100);
    await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: key(2), Body: 'line 2.0\nline 2.1\n' }));
  });
});
