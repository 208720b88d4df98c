import type { ReusedRow } from '../reuse/reused-rows.js';
import { decodeBatch, encodeBatch } from './batch-codec.js';
import { BatchCursor } from './batch-cursor.js';
import type { SlicePart } from './row-group-builder.js';
import type { ShardRow } from './shard-row.js';
import { sizeForDimension } from './size-for-dimension.js';

/** Rows per merged slice up to dimension 1024 (~4 MB with sparse, as a slice read from Redis). */
const SLICE_ROWS = 640;

/**
 * A `--reuse` shard's embedded batches (from Redis, in row order) with its reused rows (in row
 * order, a few hundred at a time) merged in, as slices in row order: what the shard thread streams
 * into row groups. Neither side is held whole.
 *
 * Embedded batches pass through as their bytes, and reused rows as they are (the row-group
 * builder copies them from the previous shard's buffers). The split gives each embedded batch a
 * range of rows, and reused rows can fall inside it (an edited line among unchanged ones): such a
 * batch, at most 10 lines, is decoded and its rows, re-encoded run by run, take their places among
 * the reused ones. Two rows with one number, or rows out of order, are left for the thread to
 * refuse (src/shards/row-group-builder.ts): that is a bug upstream.
 */
export async function* mergeReusedRows(embedded: AsyncIterable<readonly Uint8Array[]>, reused: AsyncIterable<ReusedRow[]>, dimension: number): AsyncGenerator<SlicePart[]> {
  const sliceRows = sizeForDimension(SLICE_ROWS, dimension, 80);
  const queue = new RowQueue(reused[Symbol.asyncIterator]());
  let slice: SlicePart[] = [];
  /** Rows of a decoded embedded batch, waiting to be encoded as a batch of their own. */
  let run: ShardRow[] = [];
  let rowsInSlice = 0;
  const endRun = (): void => {
    if (run.length > 0) slice.push(encodeBatch(run, dimension));
    run = [];
  };
  /** Moves reused rows below `limit` into the slice; true when the slice is full and must go. */
  const takeReusedBelow = async (limit: number): Promise<boolean> => {
    for (let next = await queue.peek(); next !== undefined && next.line.row < limit; next = await queue.peek()) {
      endRun();
      slice.push(queue.shift());
      rowsInSlice += 1;
      if (rowsInSlice >= sliceRows) return true;
    }
    return false;
  };
  const takeSlice = (): SlicePart[] => {
    endRun();
    const ready = slice;
    slice = [];
    rowsInSlice = 0;
    return ready;
  };

  for await (const batches of embedded) {
    for (const batch of batches) {
      const range = rowRange(batch);
      if (range === undefined) {
        slice.push(batch); // no rows: order does not matter
        continue;
      }
      while (await takeReusedBelow(range.first)) yield takeSlice();
      const next = await queue.peek();
      if (next === undefined || next.line.row > range.last) {
        endRun();
        slice.push(batch);
        rowsInSlice += range.count;
      } else {
        for (const row of decodeBatch(Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength))) {
          while (await takeReusedBelow(row.row)) yield takeSlice();
          run.push(row);
          rowsInSlice += 1;
        }
      }
      if (rowsInSlice >= sliceRows) yield takeSlice();
    }
    // Before the next slice is asked for: on the shard thread that hands this slice's buffer back
    // to the main thread (shard-thread.ts), so no batch of it may wait here.
    if (slice.length > 0) yield takeSlice();
  }
  while (await takeReusedBelow(Infinity)) yield takeSlice();
  const rest = takeSlice();
  if (rest.length > 0) yield rest;
}

/** First and last row of a batch (read in place, not decoded); undefined when it has none. */
function rowRange(batch: Uint8Array): { first: number; last: number; count: number } | undefined {
  const cursor = new BatchCursor(batch);
  if (!cursor.next()) return undefined;
  const first = cursor.row;
  let last = first;
  while (cursor.next()) last = cursor.row;
  return { first, last, count: cursor.count };
}

/** The reused rows one at a time, across the groups they come in. */
class RowQueue {
  private rows: ReusedRow[] = [];
  private at = 0;

  constructor(private readonly groups: AsyncIterator<ReusedRow[]>) {}

  async peek(): Promise<ReusedRow | undefined> {
    while (this.at === this.rows.length) {
      const next = await this.groups.next();
      if (next.done === true) return undefined;
      this.rows = next.value;
      this.at = 0;
    }
    return this.rows[this.at];
  }

  /** The row peek() returned. */
  shift(): ReusedRow {
    return this.rows[this.at++]!;
  }
}
