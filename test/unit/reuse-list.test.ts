import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { decodeReuseList, encodeReuseList, ReuseListError, type ReusedLine } from '../../src/reuse/reuse-list.js';

const key = (text: string): Buffer => createHash('sha256').update(text).digest();

describe('reuse list codec', () => {
  it('round-trips lines with and without ids, over several sources, with large row numbers', () => {
    const lines: ReusedLine[] = [
      { row: 0, source: 's3://corpus/a.jsonl', line: 0, id: 'doc-0', shard: 0, rowInShard: 0, hash: key('a'), upsert: false },
      { row: 2 ** 40, source: '/local/中文 b.txt', line: 2 ** 33, id: null, shard: 7, rowInShard: 9_999, hash: key('b'), upsert: false },
      { row: 5, source: 's3://corpus/a.jsonl', line: 5, id: '🙂 "quoted"', shard: 1, rowInShard: 3, hash: key('c'), upsert: true },
    ];
    expect(decodeReuseList(encodeReuseList(lines))).toEqual(lines);
    expect(decodeReuseList(encodeReuseList([]))).toEqual([]);
  });

  it('refuses truncated or foreign bytes', () => {
    const bytes = encodeReuseList([{ row: 1, source: 's', line: 1, id: 'x', shard: 0, rowInShard: 1, hash: key('x'), upsert: true }]);
    expect(() => decodeReuseList(bytes.subarray(0, bytes.length - 1))).toThrow(ReuseListError);
    expect(() => decodeReuseList(Buffer.concat([bytes, Buffer.of(0)]))).toThrow(/trailing bytes/);
    expect(() => decodeReuseList(Buffer.from('EQB\u0001'))).toThrow(/not a reuse list/);
  });
});
