import { describe, expect, it } from 'vitest';

import { BatchCodecError, decodeBatch, encodeBatch } from '../../src/shards/batch-codec.js';
import { BatchCursor } from '../../src/shards/batch-cursor.js';
import type { ShardRow } from '../../src/shards/shard-row.js';
import { float32Bytes, makeShardRows } from '../support/shard-rows.js';

/** Exact equality, with dense vectors compared as bytes so -0 and 0 differ. */
function expectSameRows(actual: ShardRow[], expected: readonly ShardRow[]): void {
  expect(actual.length).toBe(expected.length);
  for (const [i, row] of actual.entries()) {
    const want = expected[i]!;
    expect({ ...row, dense: null }).toEqual({ ...want, dense: null });
    if (want.dense === null) {
      expect(row.dense).toBeNull();
    } else {
      expect(row.dense).toBeInstanceOf(Float32Array);
      expect(float32Bytes(row.dense!).equals(float32Bytes(want.dense))).toBe(true);
    }
  }
}

describe('batch codec', () => {
  it('round-trips dense and sparse rows exactly', () => {
    const rows = makeShardRows(10, { dimension: 1024, sparseEntries: 100 });
    expectSameRows(decodeBatch(encodeBatch(rows, 1024)), rows);
  });

  it('round-trips every edge case', () => {
    const rows: ShardRow[] = [
      { row: 2 ** 40, source: 's3://b/k', line: 2 ** 40 + 7, id: null, text: '中文 🙂 emoji', dense: Float32Array.from([-0, 0, 1e-45, 3.4e38]), sparse: [] },
      { row: Number.MAX_SAFE_INTEGER, source: '', line: 0, id: '', text: '', dense: null, sparse: null },
      { row: 3, source: 'a', line: 1, id: 'ид-🙂', text: 'x'.repeat(70_000), dense: null, sparse: [{ index: -1, value: -0, token: '' }, { index: 2 ** 31 - 1, value: Math.fround(0.1), token: '🙂中' }] },
      { row: 4, source: 'a', line: 2, id: 'i', text: 't', dense: Float32Array.from([1, 2, 3, 4]), sparse: null },
    ];
    const decoded = decodeBatch(encodeBatch(rows, 4));
    expectSameRows(decoded, rows);
    expect(Object.is(decoded[2]!.sparse![0]!.value, -0)).toBe(true);
  });

  it('keeps the order of sparse entries and of rows as given', () => {
    const rows: ShardRow[] = [5, 1, 3].map((row) => ({
      row,
      source: 's',
      line: row,
      id: null,
      text: String(row),
      dense: null,
      sparse: [{ index: 9, value: 1, token: 'z' }, { index: 1, value: 2, token: 'a' }],
    }));
    const decoded = decodeBatch(encodeBatch(rows, 8));
    expect(decoded.map((row) => row.row)).toEqual([5, 1, 3]);
    expect(decoded[0]!.sparse!.map((entry) => entry.token)).toEqual(['z', 'a']);
  });

  it('encodes zero rows, which the shard writer\'s cursor also reads (a batch whose every line the provider refused)', () => {
    expect(decodeBatch(encodeBatch([], 1024))).toEqual([]);
    const cursor = new BatchCursor(encodeBatch([], 1024));
    expect(cursor.count).toBe(0);
    expect(cursor.next()).toBe(false);
    expect(() => new BatchCursor(encodeBatch([], 1024).subarray(0, 11))).toThrow(BatchCodecError);
  });

  it('stores sparse values as float32, like the shard', () => {
    const [row] = decodeBatch(encodeBatch([{ row: 0, source: 's', line: 0, id: null, text: 't', dense: null, sparse: [{ index: 1, value: 0.1, token: 't' }] }], 1));
    expect(row!.sparse![0]!.value).toBe(Math.fround(0.1));
  });

  it('returns vectors that do not alias the input buffer', () => {
    const rows = makeShardRows(2, { dimension: 8 });
    const buffer = encodeBatch(rows, 8);
    const decoded = decodeBatch(buffer);
    buffer.fill(0);
    expectSameRows(decoded, rows);
  });

  it('decodes a buffer at an odd byte offset (as Redis clients may hand it over)', () => {
    const rows = makeShardRows(3, { dimension: 16 });
    const encoded = encodeBatch(rows, 16);
    const shifted = Buffer.alloc(encoded.length + 1);
    encoded.copy(shifted, 1);
    expectSameRows(decodeBatch(shifted.subarray(1)), rows);
  });

  it('is smaller than the JSON of the same rows', () => {
    const rows = makeShardRows(10, { dimension: 1024, sparseEntries: 100 });
    const json = JSON.stringify(rows.map((row) => ({ ...row, dense: Array.from(row.dense!) })));
    expect(encodeBatch(rows, 1024).length).toBeLessThan(json.length / 3);
  });

  it('rejects a dense vector of the wrong length', () => {
    const rows = makeShardRows(1, { dimension: 8 });
    expect(() => encodeBatch(rows, 16)).toThrow(/dense vector has 8 values, expected 16/);
  });

  it('fails clearly on every truncation', () => {
    const encoded = encodeBatch(makeShardRows(3, { dimension: 8 }), 8);
    for (let length = 0; length < encoded.length; length++) {
      const decode = () => decodeBatch(encoded.subarray(0, length));
      expect(decode).toThrow(BatchCodecError);
      expect(decode).toThrow(/truncated|corrupted/);
    }
  });

  it('fails clearly on corruption', () => {
    const encoded = encodeBatch(makeShardRows(2, { dimension: 8 }), 8);
    const badMagic = Buffer.from(encoded);
    badMagic[0] = 0x7b; // '{': someone stored JSON
    expect(() => decodeBatch(badMagic)).toThrow(/bad magic bytes/);

    const badVersion = Buffer.from(encoded);
    badVersion[3] = 9;
    expect(() => decodeBatch(badVersion)).toThrow(/unsupported embedding batch version 9/);

    const hugeCount = Buffer.from(encoded);
    hugeCount.writeUInt32LE(0xffff_ffff, 4);
    expect(() => decodeBatch(hugeCount)).toThrow(/truncated/);

    const trailing = Buffer.concat([encoded, Buffer.from([0])]);
    expect(() => decodeBatch(trailing)).toThrow(/1 unexpected trailing bytes/);

    try {
      decodeBatch(badMagic);
    } catch (error) {
      expect(error).toMatchObject({ code: 'BATCH_CORRUPT', retryable: false });
    }
  });
});

describe('batch codec: content hash and upsert flag', () => {
  it('round-trips a content hash and the upsert mark, and leaves rows without them as they were', () => {
    const hash = 'ab'.repeat(32);
    const rows = [
      { row: 3, source: 's', line: 1, id: 'x', text: 'with hash', dense: null, sparse: null, contentHash: hash, upsert: true },
      { row: 4, source: 's', line: 2, id: null, text: 'without', dense: null, sparse: null },
    ];
    const decoded = decodeBatch(encodeBatch(rows, 4));
    expect(decoded).toEqual(rows);
    expect(decoded[1]).not.toHaveProperty('contentHash');
    expect(decoded[1]).not.toHaveProperty('upsert');
    expect(() => encodeBatch([{ ...rows[0]!, contentHash: 'AB'.repeat(32) }], 4)).toThrow(/64 lowercase hex/);
  });
});
