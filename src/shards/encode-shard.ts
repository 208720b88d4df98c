import { Buffer } from 'node:buffer';
import { ReadableStream } from 'node:stream/web';

import { type Data, DataType, type Int64, type Table, tableToIPC, type Utf8 } from 'apache-arrow';
import {
  Compression,
  EnabledStatistics,
  type RecordBatch as WasmRecordBatch,
  Table as WasmTable,
  transformParquetStream,
  type WriterProperties,
  WriterPropertiesBuilder,
  WriterVersion,
  writeParquet,
} from 'parquet-wasm';

import type { OutputFormat, ShardRow } from './shard-row.js';
import { denseData, int64Data, shardTableOf, sparseData, Utf8Builder, ValidityBuilder } from './arrow-builders.js';
import { shardSchema } from './shard-schema.js';
import { sizeForDimension } from './size-for-dimension.js';

/** Options of {@link encodeShard}. */
export interface EncodeShardOptions {
  /** Length of every dense vector; also the `fixed_size_list` size in the schema. */
  dimension: number;
  /** `parquet` (ZSTD text columns, uncompressed vectors) or `arrow` (Arrow IPC file format, uncompressed). */
  format: OutputFormat;
}

/**
 * Rows per Parquet row group up to dimension 1024. That is at most about 4 MB of dense floats per
 * group: readers can skip and parallelise by group, and the writer (which buffers one group) stays
 * small. A 10,000-row shard becomes ten groups. Measured at dimension 1024 with sparse:
 * parquet-wasm's memory 42 MB at 1,000 rows, 67 MB at 2,000 (the value before 2026-11-29), for a
 * file 0.5% larger.
 */
export const PARQUET_ROW_GROUP_ROWS = 1_000;

/**
 * Rows per row group at `dimension`: {@link PARQUET_ROW_GROUP_ROWS}, and fewer above dimension
 * 1024 so that a group keeps to ~4 MB of dense floats (500 rows at 2048). parquet-wasm's memory
 * grows with the group and never shrinks: at dimension 2048 with 1,000-row groups it reached
 * 67.2 MB and the worker's peak RSS 312.1–327.6 MB in seven runs; with 500-row groups 43.3–46.0 MB
 * and 280.7–316.5 MB in seven, the last two (280.7, 290.0) with slices sized the same way
 * (jobs/shard-buffer-read.ts). Bench overhead run, 100,000 lines, 2026-11-29.
 */
export function parquetRowGroupRows(dimension: number): number {
  return sizeForDimension(PARQUET_ROW_GROUP_ROWS, dimension, PARQUET_HANDOVER_ROWS);
}

/**
 * Rows per record batch handed into parquet-wasm's memory. The writer still makes row groups of
 * {@link parquetRowGroupRows} (it buffers batches until a group is full), and the file's bytes
 * are the same as for whole groups; but a smaller input batch leaves less to copy at once into the
 * WebAssembly memory, which grows to its high-water mark and never shrinks. Measured on a real
 * 10,000-row shard (scratch re-encode, 2026-11-29), peak wasm memory at 1,000 / 500 / 250 / 100
 * rows: 42.2 / 32.3 / 27.6 / 26.6 MB at dimension 1024 with sparse, 48.8 / 50.6 / 43.1 / 41.5 at
 * 2048 with sparse, 22.7 / 20.7 / 20.1 / 19.2 at 256 dense; CPU grows slowly below 250.
 */
export const PARQUET_HANDOVER_ROWS = 250;

/**
 * Encodes the rows of one shard as a Parquet or Arrow IPC file.
 *
 * The bytes depend only on `rows`, `options` and the installed writer: no timestamps, no
 * random ids, so a retried shard write produces the identical object (DESIGN invariant 5).
 * Parquet's `created_by` names the writer's version ("parquet-rs version 59.3.0"): constant
 * for a given lockfile, and readers use it for workarounds, so it is left as it is.
 * Zero rows give a valid file with the full schema.
 *
 * @param rows the shard's rows, already sorted by `row` (they are written in the given order)
 * @throws RangeError when a dense vector's length is not `dimension`, or a row/line number is
 *   not a safe non-negative integer
 */
export async function encodeShard(rows: readonly ShardRow[], options: EncodeShardOptions): Promise<Uint8Array> {
  const table = shardTable(rows, options.dimension);
  if (options.format === 'arrow') {
    return tableToIPC(table, 'file');
  }
  return toParquet(table, options.dimension);
}

/** Builds the Arrow table of a shard; exported for tests and for callers that want Arrow in memory. */
export function shardTable(rows: readonly ShardRow[], dimension: number): Table {
  if (!Number.isInteger(dimension) || dimension <= 0) {
    throw new RangeError(`dimension must be a positive integer, got ${dimension}`);
  }
  const length = rows.length;
  return shardTableOf(dimension, length, [
    int64Column(rows, 'row'),
    utf8Column(length, (i) => rows[i]!.source),
    int64Column(rows, 'line'),
    utf8Column(length, (i) => rows[i]!.id),
    utf8Column(length, (i) => rows[i]!.text),
    denseColumn(rows, dimension),
    sparseColumn(rows),
    utf8Column(length, (i) => rows[i]!.contentHash ?? null),
  ]);
}

/** Sorted rows as row-group tables of {@link parquetRowGroupRows}. */
export async function* rowTables(rows: readonly ShardRow[], dimension: number): AsyncGenerator<Table> {
  const groupRows = parquetRowGroupRows(dimension);
  for (let offset = 0; offset < rows.length; offset += groupRows) yield shardTable(rows.slice(offset, offset + groupRows), dimension);
}

/**
 * Encodes row-group tables (each ≤ {@link parquetRowGroupRows} rows, in `row` order) as Parquet,
 * yielding the file's bytes as the writer produces them (about one chunk per row group, then the
 * footer). Neither the rows, nor the Arrow data, nor the bytes of a whole shard are ever in
 * memory: only the group being written and the chunk not yet consumed. The writer takes the next
 * group only when the chunk before has been taken, so a slow consumer (an upload) holds the
 * encoding back instead of letting output pile up. The concatenated chunks equal
 * {@link encodeShard}'s bytes for the same rows.
 */
export async function* parquetChunks(groups: AsyncIterable<Table>, dimension: number, handoverRows = PARQUET_HANDOVER_ROWS): AsyncGenerator<Uint8Array> {
  const iterator = groups[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done || first.value.numRows === 0) {
    yield await toParquet(shardTable([], dimension), dimension);
    return;
  }
  let pending: Table | undefined = first.value;
  yield* chunksOf(
    writeGroups(async () => {
      const group = pending ?? (await iterator.next()).value;
      pending = undefined;
      return group === undefined || group.numRows === 0 ? undefined : group;
    }, parquetRowGroupRows(dimension), handoverRows),
  );
}

/** {@link parquetChunks} gathered into one file (tests, and callers that want the bytes whole). */
export async function encodeParquetRowGroups(groups: AsyncIterable<Table>, dimension: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of parquetChunks(groups, dimension)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Writes a whole table, handed to the writer in row-group slices. */
async function toParquet(table: Table, dimension: number): Promise<Uint8Array> {
  const groupRows = parquetRowGroupRows(dimension);
  if (table.numRows === 0) {
    // The streaming writer takes its schema from the first batch, and there is none.
    return writeParquet(WasmTable.fromIPCStream(tableToIPC(table, 'stream')), writerProperties(groupRows));
  }
  let offset = 0;
  const chunks: Uint8Array[] = [];
  const output = writeGroups(async () => {
    if (offset >= table.numRows) return undefined;
    const slice = table.slice(offset, offset + groupRows);
    offset += groupRows;
    return slice;
  }, groupRows);
  for await (const chunk of chunksOf(output)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Feeds parquet-wasm one row group at a time and returns its output stream.
 *
 * The hand-over format is an Arrow IPC stream; it carries the Arrow schema, which the writer
 * stores in the file so Arrow readers get `fixed_size_list` back (Parquet only has lists).
 * Handing over a whole 10,000-row shard at once (`writeParquet`) grew the WebAssembly memory to
 * about 330 MB at dimension 1024 with sparse, and that memory is never returned; one group at a
 * time keeps it at ~42 MB.
 */
async function writeGroups(nextGroup: () => Promise<Table | undefined>, groupRows: number, handoverRows = PARQUET_HANDOVER_ROWS): Promise<ReadableStream<Uint8Array>> {
  let group: Table | undefined;
  let offset = 0;
  const batches = new ReadableStream<WasmRecordBatch>(
    {
      // Called only when the writer wants the next batch (highWaterMark 0): one hand-over slice
      // in WebAssembly memory at a time. The next group is asked for only once the writer has
      // taken every slice of this one (a group may be a view on buffers the next one reuses).
      async pull(controller) {
        if (!group || offset >= group.numRows) {
          group = await nextGroup();
          offset = 0;
          if (!group) {
            controller.close();
            return;
          }
        }
        const slice = group.slice(offset, offset + handoverRows);
        offset += handoverRows;
        const wasmSlice = WasmTable.fromIPCStream(tableToIPC(slice, 'stream'));
        try {
          // One batch: the tables are built as a single chunk.
          for (const batch of wasmSlice.recordBatches()) controller.enqueue(batch);
        } finally {
          wasmSlice.free();
        }
      },
    },
    { highWaterMark: 0 },
  );
  // transformParquetStream takes ownership of the properties and frees each batch it consumes.
  return (await transformParquetStream(batches, writerProperties(groupRows))) as ReadableStream<Uint8Array>;
}

/** The chunks of a writer's output; stopping early cancels the writer (and so its input). */
async function* chunksOf(output: Promise<ReadableStream<Uint8Array>>): AsyncGenerator<Uint8Array> {
  const reader = (await output).getReader();
  let done = false;
  try {
    for (let next = await reader.read(); !next.done; next = await reader.read()) yield next.value;
    done = true;
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
  }
}

/**
 * The shard's columns that are not vectors. parquet-wasm addresses a column by one name, so only
 * top-level leaves can be set one by one; `dense` and `sparse` (nested: `dense.list.item`) take
 * the writer's defaults.
 */
const SCALAR_COLUMNS = shardSchema(1)
  .fields.filter((field) => !DataType.isList(field.type) && !DataType.isFixedSizeList(field.type))
  .map((field) => field.name);

/**
 * ZSTD and statistics for the scalar columns; the vector columns (the defaults) uncompressed and
 * without statistics. Embedding floats barely compress: on dimension-1024 dense&sparse rows ZSTD
 * made the file 11% smaller (7% dense-only) for about 55 µs of CPU a row, two thirds of the shard
 * thread's work (scratch re-encodes of 2,000 bench rows, 2026-11-29, five rounds: 21.1–28.7 µs a
 * row against 74.5–81.2). Min/max statistics of vector values help no reader; those of `row` let readers
 * skip row groups.
 */
function writerProperties(groupRows: number): WriterProperties {
  let builder = new WriterPropertiesBuilder()
    .setCompression(Compression.UNCOMPRESSED)
    .setStatisticsEnabled(EnabledStatistics.None)
    .setMaxRowGroupSize(groupRows)
    .setWriterVersion(WriterVersion.V2)
    // Dictionaries only pay off for `source` (a handful of values per shard). On vectors,
    // texts and ids the writer builds one, overflows it and falls back to PLAIN: measured
    // 30% slower and slightly larger.
    .setDictionaryEnabled(false)
    .setColumnDictionaryEnabled('source', true);
  for (const column of SCALAR_COLUMNS) {
    builder = builder.setColumnCompression(column, Compression.ZSTD).setColumnStatisticsEnabled(column, EnabledStatistics.Page);
  }
  return builder.build();
}

function int64Column(rows: readonly ShardRow[], key: 'row' | 'line'): Data<Int64> {
  const values = new BigInt64Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const value = rows[i]![key];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${key} must be a non-negative safe integer, got ${value} (row index ${i} of the shard)`);
    }
    values[i] = BigInt(value);
  }
  return int64Data(values);
}

function utf8Column(length: number, valueAt: (index: number) => string | null): Data<Utf8> {
  const builder = new Utf8Builder(length);
  for (let i = 0; i < length; i++) {
    builder.append(valueAt(i));
  }
  return builder.finish();
}

/** The dense column: one Float32Array of rows × dimension as the child data. */
function denseColumn(rows: readonly ShardRow[], dimension: number): Data {
  const values = new Float32Array(rows.length * dimension);
  const validity = new ValidityBuilder(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const dense = rows[i]!.dense;
    if (dense === null) {
      validity.setNull(i);
      continue;
    }
    if (dense.length !== dimension) {
      throw new RangeError(`row ${rows[i]!.row}: dense vector has ${dense.length} values, expected ${dimension}`);
    }
    values.set(dense, i * dimension);
  }
  return denseData(values, validity, rows.length, dimension);
}

/** The sparse column: list offsets over flat index / value / token children. */
function sparseColumn(rows: readonly ShardRow[]): Data {
  const offsets = new Int32Array(rows.length + 1);
  const validity = new ValidityBuilder(rows.length);
  let total = 0;
  for (let i = 0; i < rows.length; i++) {
    const sparse = rows[i]!.sparse;
    if (sparse === null) {
      validity.setNull(i);
    } else {
      total += sparse.length;
    }
    offsets[i + 1] = total;
  }
  const indices = new Int32Array(total);
  const values = new Float32Array(total);
  const tokens = new Utf8Builder(total);
  let k = 0;
  for (const row of rows) {
    if (row.sparse === null) {
      continue;
    }
    for (const entry of row.sparse) {
      indices[k] = entry.index;
      values[k] = entry.value;
      tokens.append(entry.token);
      k++;
    }
  }
  return sparseData(offsets, validity, rows.length, { indices, values, tokens: tokens.finish() });
}
