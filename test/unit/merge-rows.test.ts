import { createHash } from 'node:crypto';

import { tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';

import { PreviousBatch } from '../../src/reuse/previous-batch.js';
import { type ReusedRow, shardRowOf } from '../../src/reuse/reused-rows.js';
import { decodeBatch, encodeBatch } from '../../src/shards/batch-codec.js';
import { shardTable } from '../../src/shards/encode-shard.js';
import { mergeReusedRows } from '../../src/shards/merge-rows.js';
import { batchRowGroups, type SlicePart } from '../../src/shards/row-group-builder.js';
import type { ShardRow } from '../../src/shards/shard-row.js';
import { makeShardRows } from '../support/shard-rows.js';

/**
 * `--reuse` shards: embedded batches and reused rows, each in row order, merged by row into slices
 * the shard thread streams. The result must be every row once, in row order, in slices of bounded
 * size, and accepted by the thread's row-group builder (which refuses any misorder).
 */
const DIMENSION = 8;
const ALL = makeShardRows(2_000, { dimension: DIMENSION, sparseEntries: 3 }).map((row) => ({ ...row, contentHash: createHash('sha256').update(row.text).digest('hex') }));

async function* from<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}

/**
 * Rows as a previous output gives them: groups of uneven size, each row in the Arrow buffers of
 * its group (as read from a previous shard), its number, source, line and id from the reuse list.
 */
function groupsOf(rows: ShardRow[], size: number): ReusedRow[][] {
  const groups: ReusedRow[][] = [];
  for (let i = 0; i < rows.length; i += size) {
    const group = rows.slice(i, i + size);
    const batch = new PreviousBatch(shardTable(group, DIMENSION).batches[0]!);
    groups.push(
      group.map((row, at) => ({
        batch,
        at,
        line: { row: row.row, source: row.source, line: row.line, id: row.id, shard: 0, rowInShard: i + at, hash: Buffer.from(row.contentHash!, 'hex'), upsert: row.upsert === true },
      })),
    );
  }
  return groups;
}

async function merge(embedded: Uint8Array[][], reused: ReusedRow[][]): Promise<SlicePart[][]> {
  const slices: SlicePart[][] = [];
  for await (const slice of mergeReusedRows(from(embedded), from(reused), DIMENSION)) slices.push(slice);
  return slices;
}

const decode = (part: SlicePart): ShardRow[] => (part instanceof Uint8Array ? decodeBatch(Buffer.from(part.buffer, part.byteOffset, part.byteLength)) : [shardRowOf(part)]);
const rowsOf = (slices: SlicePart[][]): number[] => slices.flat().flatMap((part) => decode(part).map((row) => row.row));

describe('mergeReusedRows', () => {
  it('puts embedded batches and reused rows in row order, rows inside a batch range included, and passes clean batches through as their bytes', async () => {
    // Embedded: rows 5-7 (clean), 20 and 40 in one batch (reused 25 and 30 fall inside it), 41, then 1990-1999.
    const embeddedRows = [[5, 6, 7], [20, 40], [41], [1990, 1991, 1992, 1993, 1994, 1995, 1996, 1997, 1998, 1999]];
    const batches = embeddedRows.map((rows) => encodeBatch(rows.map((row) => ALL[row]!), DIMENSION));
    const embeddedSet = new Set(embeddedRows.flat());
    const reused = ALL.filter((row) => !embeddedSet.has(row.row)).map((row) => (row.row === 30 ? { ...row, upsert: true } : row));
    const slices = await merge([batches.slice(0, 2), batches.slice(2)], groupsOf(reused, 333));

    expect(rowsOf(slices)).toEqual(ALL.map((row) => row.row));
    const out = slices.flat();
    for (const clean of [batches[0], batches[2], batches[3]]) expect(out).toContain(clean);
    expect(out).not.toContain(batches[1]);
    // Every row exactly as it came in (the decoded batch re-encoded, the reused rows as they were read).
    const decoded = out.flatMap(decode);
    expect(decoded.find((row) => row.row === 40)).toEqual(ALL[40]);
    expect(decoded.find((row) => row.row === 25)).toEqual(ALL[25]);
    expect(decoded.find((row) => row.row === 30)?.upsert).toBe(true);

    // Slices stay near 640 rows at this dimension, whatever the groups' sizes.
    for (const slice of slices) expect(slice.reduce((sum, batch) => sum + decode(batch).length, 0)).toBeLessThanOrEqual(640 + 9);
    expect(slices.length).toBeGreaterThanOrEqual(Math.ceil(2_000 / 649));

    // The shard thread's builder takes the stream (it throws on rows out of order or repeated).
    // Its groups are the very Arrow data of the same rows decoded (so the file bytes are too): the
    // reused rows copied from the previous buffers as the embedded ones from their batches.
    const marked: ShardRow[] = [];
    let rows = 0;
    for await (const group of batchRowGroups(from(slices), 500, DIMENSION, marked)) {
      expect(Buffer.from(tableToIPC(group)).equals(Buffer.from(tableToIPC(shardTable(ALL.slice(rows, rows + 500), DIMENSION)))), `group at row ${rows}`).toBe(true);
      rows += group.numRows;
    }
    expect(rows).toBe(2_000);
    expect(marked.map((row) => row.row)).toEqual([30]);
  });

  it('handles a shard of reused rows alone, and one of embedded batches alone', async () => {
    expect(rowsOf(await merge([], groupsOf(ALL, 1_000)))).toEqual(ALL.map((row) => row.row));
    const batches = Array.from({ length: 10 }, (_, i) => encodeBatch(ALL.slice(i * 10, i * 10 + 10), DIMENSION));
    const slices = await merge([batches], []);
    expect(slices.flat()).toEqual(batches);
  });

  it('leaves a reused row that repeats an embedded one for the thread to refuse', async () => {
    const slices = await merge([[encodeBatch(ALL.slice(0, 10), DIMENSION)]], groupsOf([ALL[5]!], 1));
    await expect(async () => {
      for await (const group of batchRowGroups(from(slices), 500, DIMENSION, [])) void group;
    }).rejects.toThrow(/out of order at row 5/);
  });
});
