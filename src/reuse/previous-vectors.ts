import { openAsBlob } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { makeVector, type Table, tableFromIPC, type Vector } from 'apache-arrow';
import { ParquetFile, type RecordBatch } from 'parquet-wasm';

import type { EmbeddingItem, SparseEntry } from '../embedding.js';
import { ReuseUnavailableError } from '../errors.js';
import type { PreviousShards } from './previous-shards.js';

/** Where a previous row is: its shard (index in the previous manifest) and its row in that file. */
export interface PreviousRowRef {
  shard: number;
  rowInShard: number;
}

/** A previous row's vectors, with its text and content hash (the writer checks the hash). */
export interface PreviousRowVectors extends EmbeddingItem {
  text: string;
  contentHash: string | null;
}

/** A previous row, and the index in `refs` of the ref that asked for it. */
export interface FoundRow {
  ref: number;
  vectors: PreviousRowVectors;
}

const COLUMNS = ['text', 'dense', 'sparse', 'content_hash'];
/**
 * Rows decoded at a time: parquet-wasm streams a row group in batches of this many, which keeps its
 * WebAssembly memory (never given back) at ~15 MB at dimension 1024 with sparse, against ~29 MB
 * for a whole 1,000-row group, at the same speed. Arrow shards are handed on in groups of as many.
 */
const READ_BATCH_ROWS = 250;

/**
 * The rows `refs` point at, copied out of the previous shards so the new shard can be written with
 * them instead of DashScope calls, a batch of up to {@link READ_BATCH_ROWS} rows of one previous
 * row group at a time, in file order (by shard, then row). Only the `text`, `dense`, `sparse` and
 * `content_hash` columns are decoded, and only of row groups that hold a wanted row, so the shard
 * thread holds a few hundred previous rows at a time, never a whole file.
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
        found.push({ ref: wanted[next]!, vectors: group.row(nextWanted() - group.rowStart) });
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

interface RowGroup {
  rowStart: number;
  rows: number;
  row(index: number): PreviousRowVectors;
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
        for await (const batch of (await file.stream({ rowGroups: [index], columns: COLUMNS, batchSize: READ_BATCH_ROWS })) as AsyncIterable<RecordBatch>) {
          const table = tableFromIPC(batch.intoIPCStream());
          yield tableRows(table, rowStart + read);
          read += table.numRows;
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
  const table = tableFromIPC(bytes);
  for (let rowStart = 0; rowStart < table.numRows; rowStart += READ_BATCH_ROWS) {
    yield tableRows(table, rowStart, rowStart, Math.min(READ_BATCH_ROWS, table.numRows - rowStart));
  }
}

/**
 * The rows of a table of `text`, `dense`, `sparse` and `content_hash`. Dense vectors are views on
 * the table's buffer, not copies: it lives as long as one of its rows does, and the rows are
 * written into the new shard before the next batch is read. Sparse lists are read from their child
 * columns: going through each row's struct proxies cost 90 µs a row at 60 entries, nearly all of a
 * reindex's time.
 */
function tableRows(table: Table, rowStart: number, first = 0, count = table.numRows): RowGroup {
  const texts = table.getChild('text');
  const hashes = table.getChild('content_hash');
  const dense = table.getChild('dense');
  const sparse = sparseLists(table.getChild('sparse'));
  return {
    rowStart,
    rows: count,
    row: (index) => {
      const at = first + index;
      const denseValue = dense?.get(at) as { toArray(): Float32Array } | null | undefined;
      return {
        text: String(texts?.get(at) ?? ''),
        contentHash: (hashes?.get(at) as string | null | undefined) ?? null,
        dense: denseValue ? denseValue.toArray() : null,
        sparse: sparse(at),
      };
    },
  };
}

/** Row `index`'s sparse list of a `list<struct<index, value, token>>` column (null when null or absent). */
function sparseLists(column: Vector | null): (index: number) => SparseEntry[] | null {
  if (!column) return () => null;
  const chunks = column.data.map((list) => {
    const entries = makeVector(list.children[0]!) as Vector;
    return {
      list,
      indices: entries.getChild('index')!.toArray() as Int32Array,
      values: entries.getChild('value')!.toArray() as Float32Array,
      tokens: entries.getChild('token')!,
    };
  });
  const chunkStarts = column.data.map((_, i) => column.data.slice(0, i).reduce((sum, data) => sum + data.length, 0));
  return (index) => {
    let chunk = chunks.length - 1;
    while (chunkStarts[chunk]! > index) chunk -= 1;
    const { list, indices, values, tokens } = chunks[chunk]!;
    const at = index - chunkStarts[chunk]!;
    if (!list.getValid(at)) return null;
    // Arrow JS slices a list's offsets with it (Data.slice), so they index from `at`, not `list.offset + at`.
    const offsets = list.valueOffsets as Int32Array;
    const entries: SparseEntry[] = [];
    for (let k = offsets[at]!; k < offsets[at + 1]!; k++) {
      entries.push({ index: indices[k]!, value: values[k]!, token: String(tokens.get(k)) });
    }
    return entries;
  };
}
