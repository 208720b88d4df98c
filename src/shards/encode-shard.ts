import { Buffer } from 'node:buffer';

import { type Data, Float32, Int32, Int64, makeData, RecordBatch, Struct, Table, tableToIPC, Utf8 } from 'apache-arrow';
import {
  Compression,
  Table as WasmTable,
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
 * Rows per Parquet row group. The default shard (10,000 rows) is one row group: about 40 MB
 * of dense floats at dimension 1024 before compression, small enough for any reader and
 * large enough that per-group overhead does not matter.
 */
export const PARQUET_ROW_GROUP_ROWS = 10_000;

/**
 * Parquet's `created_by`. Set explicitly so the bytes of a shard do not change when the
 * parquet-wasm version does (DESIGN invariant 5: identical shards on re-run).
 */
export const PARQUET_CREATED_BY = 'embedq';

/**
 * Encodes the rows of one shard as a Parquet or Arrow IPC file.
 *
 * The bytes depend only on `rows` and `options`: no timestamps, no random ids, so a retried
 * shard write produces the identical object. Zero rows give a valid file with the full schema.
 *
 * @param rows the shard's rows, already sorted by `row` (they are written in the given order)
 * @throws RangeError when a dense vector's length is not `dimension`, or a row/line number is
 *   not a safe non-negative integer
 */
export function encodeShard(rows: readonly ShardRow[], options: EncodeShardOptions): Uint8Array {
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
  ];
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
  return new Table(schema, batch);
}

function toParquet(table: Table): Uint8Array {
  // The IPC stream is the hand-over format between arrow JS and parquet-wasm (Rust arrow-rs);
  // it carries the Arrow schema, which the writer stores in the file so Arrow readers get the
  // fixed_size_list back (Parquet itself only has variable-length lists).
  const wasmTable = WasmTable.fromIPCStream(tableToIPC(table, 'stream'));
  const properties = new WriterPropertiesBuilder()
    .setCompression(Compression.ZSTD)
    .setMaxRowGroupSize(PARQUET_ROW_GROUP_ROWS)
    .setWriterVersion(WriterVersion.V2)
    .setCreatedBy(PARQUET_CREATED_BY)
    // Dictionaries only pay off for `source` (a handful of values per shard). On vectors,
    // texts and ids the writer would build one, overflow it and fall back to PLAIN: measured
    // 30% slower and slightly larger. (Nested columns such as `dense.list.item` cannot be
    // addressed one by one: parquet-wasm takes a column path as a single name.)
    .setDictionaryEnabled(false)
    .setColumnDictionaryEnabled('source', true)
    .build();
  // writeParquet takes ownership of (and frees) both the table and the properties.
  return writeParquet(wasmTable, properties);
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
