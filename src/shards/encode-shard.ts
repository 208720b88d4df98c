import { Buffer } from 'node:buffer';
import { ReadableStream } from 'node:stream/web';

import { type Data, Float32, Int32, Int64, makeData, RecordBatch, Struct, Table, tableToIPC, Utf8 } from 'apache-arrow';
import {
  Compression,
  type RecordBatch as WasmRecordBatch,
  Table as WasmTable,
  transformParquetStream,
  type WriterProperties,
  WriterPropertiesBuilder,
  WriterVersion,
  writeParquet,
} from 'parquet-wasm';

import type { OutputFormat, ShardRow } from './shard-row.js';
import { denseType, shardSchema, sparseEntryType, sparseType } from './shard-schema.js';

/** Options of {@link encodeShard}. */
export interface EncodeShardOptions {
  /** Length of every dense vector; also the `fixed_size_list` size in the schema. */
  dimension: number;
  /** `parquet` (ZSTD) or `arrow` (Arrow IPC file format, uncompressed). */
  format: OutputFormat;
}

/**
 * Rows per Parquet row group, and per slice handed to the writer. At dimension 1024 that is
 * about 8 MB of dense floats per group: readers can skip and parallelise by group, and the
 * writer (which buffers one group) stays small. A 10,000-row shard becomes five groups.
 */
export const PARQUET_ROW_GROUP_ROWS = 2_000;

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
  return toParquet(table);
}

/** Builds the Arrow table of a shard; exported for tests and for callers that want Arrow in memory. */
export function shardTable(rows: readonly ShardRow[], dimension: number): Table {
  if (!Number.isInteger(dimension) || dimension <= 0) {
    throw new RangeError(`dimension must be a positive integer, got ${dimension}`);
  }
  const schema = shardSchema(dimension);
  const length = rows.length;
  const children = [
    int64Column(rows, 'row'),
    utf8Column(length, (i) => rows[i]!.source),
    int64Column(rows, 'line'),
    utf8Column(length, (i) => rows[i]!.id),
    utf8Column(length, (i) => rows[i]!.text),
    denseColumn(rows, dimension),
    sparseColumn(rows),
    utf8Column(length, (i) => rows[i]!.contentHash ?? null),
  ];
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
  return new Table(schema, batch);
}

/**
 * Encodes rows handed over one row group at a time (each ≤ {@link PARQUET_ROW_GROUP_ROWS}, in
 * `row` order) as Parquet, yielding the file's bytes as the writer produces them (about one chunk
 * per row group, then the footer). Neither the rows, nor the Arrow table, nor the bytes of a whole
 * shard are ever in memory: only the group being written and the chunk not yet consumed. The
 * writer takes the next group only when the chunk before has been taken, so a slow consumer (an
 * upload) holds the encoding back instead of letting output pile up. The concatenated chunks equal
 * {@link encodeShard}'s bytes for the same rows.
 */
export async function* parquetChunks(groups: AsyncIterable<readonly ShardRow[]>, dimension: number): AsyncGenerator<Uint8Array> {
  const iterator = groups[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done || first.value.length === 0) {
    yield await toParquet(shardTable([], dimension));
    return;
  }
  let pending: readonly ShardRow[] | undefined = first.value;
  yield* chunksOf(
    writeGroups(async () => {
      const group = pending ?? (await iterator.next()).value;
      pending = undefined;
      return group === undefined || group.length === 0 ? undefined : shardTable(group, dimension);
    }),
  );
}

/** {@link parquetChunks} gathered into one file (tests, and callers that want the bytes whole). */
export async function encodeParquetRowGroups(groups: AsyncIterable<readonly ShardRow[]>, dimension: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of parquetChunks(groups, dimension)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Writes a whole table, handed to the writer in row-group slices. */
async function toParquet(table: Table): Promise<Uint8Array> {
  if (table.numRows === 0) {
    // The streaming writer takes its schema from the first batch, and there is none.
    return writeParquet(WasmTable.fromIPCStream(tableToIPC(table, 'stream')), writerProperties());
  }
  let offset = 0;
  const chunks: Uint8Array[] = [];
  const output = writeGroups(async () => {
    if (offset >= table.numRows) return undefined;
    const slice = table.slice(offset, offset + PARQUET_ROW_GROUP_ROWS);
    offset += PARQUET_ROW_GROUP_ROWS;
    return slice;
  });
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
 * time keeps it at 45-85 MB.
 */
async function writeGroups(nextGroup: () => Promise<Table | undefined>): Promise<ReadableStream<Uint8Array>> {
  const batches = new ReadableStream<WasmRecordBatch>(
    {
      // Called only when the writer wants the next batch (highWaterMark 0): one group in
      // WebAssembly memory at a time.
      async pull(controller) {
        const group = await nextGroup();
        if (!group) {
          controller.close();
          return;
        }
        const wasmGroup = WasmTable.fromIPCStream(tableToIPC(group, 'stream'));
        try {
          for (const batch of wasmGroup.recordBatches()) {
            controller.enqueue(batch);
          }
        } finally {
          wasmGroup.free();
        }
      },
    },
    { highWaterMark: 0 },
  );
  // transformParquetStream takes ownership of the properties and frees each batch it consumes.
  return (await transformParquetStream(batches, writerProperties())) as ReadableStream<Uint8Array>;
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

function writerProperties(): WriterProperties {
  return (
    new WriterPropertiesBuilder()
      .setCompression(Compression.ZSTD)
      .setMaxRowGroupSize(PARQUET_ROW_GROUP_ROWS)
      .setWriterVersion(WriterVersion.V2)
      // Dictionaries only pay off for `source` (a handful of values per shard). On vectors,
      // texts and ids the writer builds one, overflows it and falls back to PLAIN: measured
      // 30% slower and slightly larger. (Nested columns such as `dense.list.item` cannot be
      // addressed one by one: parquet-wasm takes a column path as a single name.)
      .setDictionaryEnabled(false)
      .setColumnDictionaryEnabled('source', true)
      .build()
  );
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
  return makeData({ type: new Int64(), length: rows.length, nullCount: 0, data: values });
}

function utf8Column(length: number, valueAt: (index: number) => string | null): Data<Utf8> {
  const builder = new Utf8Builder(length);
  for (let i = 0; i < length; i++) {
    builder.append(valueAt(i));
  }
  return builder.finish();
}

/**
 * Builds a utf8 column in one pass into a growing byte buffer, rather than through
 * arrow's generic builders: a shard's sparse tokens alone are about a million strings.
 */
class Utf8Builder {
  readonly #offsets: Int32Array;
  readonly #validity: ValidityBuilder;
  #bytes: Buffer;
  #count = 0;
  #position = 0;

  constructor(private readonly length: number) {
    this.#offsets = new Int32Array(length + 1);
    this.#validity = new ValidityBuilder(length);
    this.#bytes = Buffer.allocUnsafeSlow(Math.max(64, length * 16));
  }

  append(value: string | null): void {
    if (value === null) {
      this.#validity.setNull(this.#count);
    } else {
      // A UTF-16 code unit never needs more than 3 UTF-8 bytes, so this much room always suffices.
      const worstCase = this.#position + value.length * 3;
      if (worstCase > this.#bytes.length) {
        const next = Buffer.allocUnsafeSlow(Math.max(worstCase, this.#bytes.length * 2));
        this.#bytes.copy(next, 0, 0, this.#position);
        this.#bytes = next;
      }
      this.#position = writeUtf8(this.#bytes, value, this.#position);
      if (this.#position > 0x7fff_ffff) {
        throw new RangeError('a utf8 column of a shard exceeds 2 GiB; use fewer rows per shard');
      }
    }
    this.#offsets[++this.#count] = this.#position;
  }

  finish(): Data<Utf8> {
    if (this.#count !== this.length) {
      throw new Error(`Utf8Builder: ${this.#count} values appended, ${this.length} expected`);
    }
    return makeData({
      type: new Utf8(),
      length: this.length,
      nullCount: this.#validity.nullCount,
      nullBitmap: this.#validity.bitmap(),
      valueOffsets: this.#offsets,
      // subarray, not slice: no copy; the IPC writer only reads the used bytes.
      data: this.#bytes.subarray(0, this.#position),
    });
  }
}

/**
 * The dense column: one Float32Array of rows × dimension as the child data. A row without a
 * vector keeps its (zeroed) slot, as Arrow's fixed_size_list layout requires, and is marked null.
 */
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
  const type = denseType(dimension);
  const child = makeData({ type: type.children[0]!.type, length: values.length, nullCount: 0, data: values });
  return makeData({ type, length: rows.length, nullCount: validity.nullCount, nullBitmap: validity.bitmap(), child });
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
  const entryType = sparseEntryType();
  const child = makeData({
    type: entryType,
    length: total,
    nullCount: 0,
    children: [
      makeData({ type: new Int32(), length: total, nullCount: 0, data: indices }),
      makeData({ type: new Float32(), length: total, nullCount: 0, data: values }),
      tokens.finish(),
    ],
  });
  return makeData({
    type: sparseType(),
    length: rows.length,
    nullCount: validity.nullCount,
    nullBitmap: validity.bitmap(),
    valueOffsets: offsets,
    child,
  });
}

/**
 * Writes `value` as UTF-8 at `position` and returns the new position. Short ASCII strings
 * (most sparse tokens) are copied by hand: a native `Buffer.write` call costs more than the
 * copy itself at that size, and a shard has about a million tokens.
 */
function writeUtf8(bytes: Buffer, value: string, position: number): number {
  if (value.length <= 16) {
    let i = 0;
    for (; i < value.length; i++) {
      const code = value.charCodeAt(i);
      if (code >= 0x80) {
        break;
      }
      bytes[position + i] = code;
    }
    if (i === value.length) {
      return position + i;
    }
  }
  return position + bytes.write(value, position, 'utf8');
}

/** An Arrow validity bitmap (bit set = valid, LSB first), allocated only once a null appears. */
class ValidityBuilder {
  nullCount = 0;
  #bits: Uint8Array | null = null;

  constructor(private readonly length: number) {}

  setNull(index: number): void {
    if (this.#bits === null) {
      this.#bits = new Uint8Array(Math.ceil(this.length / 8)).fill(0xff);
    }
    this.#bits[index >> 3]! &= ~(1 << (index & 7));
    this.nullCount++;
  }

  /** The bitmap, or an empty one when nothing is null (Arrow then omits the buffer). */
  bitmap(): Uint8Array {
    return this.#bits ?? new Uint8Array(0);
  }
}
