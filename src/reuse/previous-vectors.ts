import { openAsBlob } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { type RecordBatch, tableFromIPC } from 'apache-arrow';
import { ParquetFile, type RecordBatch as WasmRecordBatch } from 'parquet-wasm';

import { ReuseUnavailableError } from '../errors.js';
import { PreviousBatch } from './previous-batch.js';
import type { PreviousShards } from './previous-shards.js';

/** Where a previous row is: its shard (index in the previous manifest) and its row in that file. */
export interface PreviousRowRef {
  shard: number;
  rowInShard: number;
}

/** A previous row: the index in `refs` of the ref that asked for it, and where it is in a read batch. */
export interface FoundRow {
  ref: number;
  batch: PreviousBatch;
  at: number;
}

const COLUMNS = ['text', 'dense', 'sparse', 'content_hash'];
/**
 * Rows decoded at a time: parquet-wasm streams a row group in batches of this many, which keeps its
 * WebAssembly memory (never given back) at ~15 MB at dimension 1024 with sparse, against ~29 MB
 * for a whole 1,000-row group, at the same speed. Arrow shards are handed on in groups of as many.
 */
const READ_BATCH_ROWS = 250;

/**
 * The rows `refs` point at, found in the previous shards so the new shard can be written with
 * them instead of DashScope calls, a batch of up to {@link READ_BATCH_ROWS} rows of one previous
 * row group at a time, in file order (by shard, then row). Only the `text`, `dense`, `sparse` and
 * `content_hash` columns are read, and only of row groups that hold a wanted row, so the shard
 * thread holds a few hundred previous rows at a time, never a whole file. Rows stay in their read
 * batch's Arrow buffers: the writer copies them from there (or decodes them: PreviousBatch.row).
 *
 * It needs only the previous manifest, not the index: the split step turns index positions into
 * refs (PreviousIndex.locate).
 */
export async function* previousRows(previous: PreviousShards, refs: readonly PreviousRowRef[], order = fileOrder(refs)): AsyncGenerator<FoundRow[]> {
  for (let start = 0; start < order.length; ) {
    const shard = refs[order[start]!]!.shard;
    let end = start;
    while (end < order.length && refs[order[end]!]!.shard === shard) end += 1;
    yield* shardRows(previous, shard, order.slice(start, end), refs);
    start = end;
  }
}

/** Indexes into `refs` in the order the previous files are read: by shard, then row. */
export function fileOrder(refs: readonly PreviousRowRef[]): number[] {
  return refs.map((_, i) => i).sort((a, b) => refs[a]!.shard - refs[b]!.shard || refs[a]!.rowInShard - refs[b]!.rowInShard);
}

/** `wanted`: indexes into `refs`, all of `shard`, sorted by row. */
async function* shardRows(previous: PreviousShards, shard: number, wanted: number[], refs: readonly PreviousRowRef[]): AsyncGenerator<FoundRow[]> {
  const { location } = previous;
  const file = previous.files[shard];
  if (file === undefined) throw new ReuseUnavailableError(`${location}: the manifest has no shard ${shard}`);
  const local = await previous.localCopy(shard);
  let next = 0;
  const nextWanted = (): number => refs[wanted[next]!]!.rowInShard;
  try {
    const groups = previous.format === 'arrow' ? arrowGroups(await readFile(local)) : parquetGroups(local, nextWanted);
    for await (const group of groups) {
      const found: FoundRow[] = [];
      for (; next < wanted.length && nextWanted() < group.rowStart + group.rows; next += 1) {
        found.push({ ref: wanted[next]!, batch: group.batch, at: group.first + nextWanted() - group.rowStart });
      }
      if (found.length > 0) yield found;
      if (next === wanted.length) return;
    }
  } catch (error) {
    if (error instanceof ReuseUnavailableError) throw error;
    throw new ReuseUnavailableError(`${location}: shard ${file} unreadable: ${(error as Error).message}`, { cause: error });
  }
  throw new ReuseUnavailableError(`${location}: shard ${file} has no row ${nextWanted()}`);
}

/** Rows `rowStart` to `rowStart + rows` of a shard: rows `first` on of `batch`. */
interface RowGroup {
  rowStart: number;
  rows: number;
  batch: PreviousBatch;
  first: number;
}

/**
 * A local Parquet shard's row groups in order, each read when reached; one that holds no wanted
 * row (`nextWanted()`, the lowest row still wanted, is past it) is skipped unread. parquet-wasm
 * reads the file through a file-backed Blob, so only the group's bytes are read, and hands the
 * group on a few hundred rows at a time: neither the file nor its decoded columns are ever in
 * memory whole.
 */
async function* parquetGroups(local: string, nextWanted: () => number): AsyncGenerator<RowGroup> {
  const file = await ParquetFile.fromFile(await openAsBlob(local));
  try {
    const metadata = file.metadata();
    const groups = metadata.rowGroups().map((group) => {
      const rows = group.numRows();
      group.free();
      return rows;
    });
    metadata.free();
    let rowStart = 0;
    for (const [index, rows] of groups.entries()) {
      if (nextWanted() < rowStart + rows) {
        let read = 0;
        for await (const wasmBatch of (await file.stream({ rowGroups: [index], columns: COLUMNS, batchSize: READ_BATCH_ROWS })) as AsyncIterable<WasmRecordBatch>) {
          for (const batch of tableFromIPC(wasmBatch.intoIPCStream()).batches) {
            yield { rowStart: rowStart + read, rows: batch.numRows, batch: new PreviousBatch(batch), first: 0 };
            read += batch.numRows;
          }
        }
        if (read !== rows) throw new Error(`row group ${index} has ${read} rows, its metadata says ${rows}`);
      }
      rowStart += rows;
    }
  } finally {
    file.free();
  }
}

/** An Arrow IPC shard, read whole (the format has no row groups to read apart), in groups of rows. */
function* arrowGroups(bytes: Buffer): Generator<RowGroup> {
  let rowStart = 0;
  for (const recordBatch of tableFromIPC(bytes).batches as RecordBatch[]) {
    const batch = new PreviousBatch(recordBatch);
    for (let first = 0; first < batch.length; first += READ_BATCH_ROWS) {
      yield { rowStart: rowStart + first, rows: Math.min(READ_BATCH_ROWS, batch.length - first), batch, first };
    }
    rowStart += batch.length;
  }
}
