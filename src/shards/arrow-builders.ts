import { Buffer } from 'node:buffer';

import { type Data, Float32, Int32, Int64, makeData, RecordBatch, Struct, Table, Utf8 } from 'apache-arrow';

import { denseType, shardSchema, sparseEntryType, sparseType } from './shard-schema.js';

/**
 * Column builders shared by the two ways a shard's Arrow data is built (from decoded rows, and
 * straight from batch bytes: row-group-builder.ts), so both give the same buffers and so the same
 * file bytes.
 */

/** An Arrow validity bitmap (bit set = valid, LSB first), allocated only once a null appears. */
export class ValidityBuilder {
  nullCount = 0;
  #bits: Uint8Array | null = null;

  constructor(private capacity: number) {}

  /** Empties the builder, keeping its bitmap for the next values. */
  reset(): void {
    this.nullCount = 0;
    this.#bits?.fill(0xff);
  }

  setNull(index: number): void {
    if (this.#bits === null) {
      this.#bits = new Uint8Array(Math.ceil(this.capacity / 8)).fill(0xff);
    } else if (index >= this.capacity) {
      this.capacity = Math.max(index + 1, this.capacity * 2);
      const grown = new Uint8Array(Math.ceil(this.capacity / 8)).fill(0xff);
      grown.set(this.#bits);
      this.#bits = grown;
    }
    this.#bits[index >> 3]! &= ~(1 << (index & 7));
    this.nullCount++;
  }

  /** The bitmap of the first `length` values, or an empty one when none is null (Arrow then omits it). */
  bitmap(length: number): Uint8Array {
    return this.#bits === null ? new Uint8Array(0) : this.#bits.subarray(0, Math.ceil(length / 8));
  }
}

/**
 * Builds a utf8 column in one pass into a growing byte buffer, rather than through arrow's
 * generic builders: a shard's sparse tokens alone are about a million strings. Values come as
 * strings, or as UTF-8 bytes copied as they are.
 */
export class Utf8Builder {
  #offsets: Int32Array;
  readonly #validity: ValidityBuilder;
  #bytes: Buffer;
  #count = 0;
  #position = 0;

  /** @param capacity values expected (the builder grows past it) */
  constructor(capacity: number) {
    this.#offsets = new Int32Array(capacity + 1);
    this.#validity = new ValidityBuilder(capacity);
    this.#bytes = Buffer.allocUnsafeSlow(Math.max(64, capacity * 16));
  }

  get count(): number {
    return this.#count;
  }

  /** Empties the builder, keeping its buffers: the column it finished last must no longer be in use. */
  reset(): void {
    this.#validity.reset();
    this.#count = 0;
    this.#position = 0;
  }

  append(value: string | null): void {
    if (value === null) {
      this.appendNull();
      return;
    }
    // A UTF-16 code unit never needs more than 3 UTF-8 bytes, so this much room always suffices.
    this.#reserve(value.length * 3);
    this.#position = writeUtf8(this.#bytes, value, this.#position);
    this.#next();
  }

  /** Appends bytes `[start, end)` of `source`, which must be UTF-8. */
  appendBytes(source: Uint8Array, start: number, end: number): void {
    this.#reserve(end - start);
    this.#bytes.set(source.subarray(start, end), this.#position);
    this.#position += end - start;
    this.#next();
  }

  /**
   * Copies bytes `[start, end)` of `source` (UTF-8) as the data of the next values, in one copy;
   * {@link endValue} then closes them one by one. Sparse tokens come as one run per row: copying
   * them token by token cost a typed-array view and a copy per token, a million a shard.
   */
  copyRun(source: Uint8Array, start: number, end: number): void {
    this.#reserve(end - start);
    this.#bytes.set(source.subarray(start, end), this.#position);
  }

  /** Closes the next value after `byteLength` bytes of the run {@link copyRun} copied. */
  endValue(byteLength: number): void {
    this.#position += byteLength;
    this.#next();
  }

  /** Appends bytes `[start, end)` of `source` as lowercase hex digits. */
  appendHex(source: Uint8Array, start: number, end: number): void {
    this.#reserve((end - start) * 2);
    for (let i = start; i < end; i++) {
      const byte = source[i]!;
      this.#bytes[this.#position++] = HEX[byte >> 4]!;
      this.#bytes[this.#position++] = HEX[byte & 15]!;
    }
    this.#next();
  }

  appendNull(): void {
    this.#validity.setNull(this.#count);
    this.#next();
  }

  finish(): Data<Utf8> {
    return makeData({
      type: new Utf8(),
      length: this.#count,
      nullCount: this.#validity.nullCount,
      nullBitmap: this.#validity.bitmap(this.#count),
      valueOffsets: this.#offsets.subarray(0, this.#count + 1),
      // subarray, not slice: no copy; the IPC writer only reads the used bytes.
      data: this.#bytes.subarray(0, this.#position),
    });
  }

  #reserve(bytes: number): void {
    const needed = this.#position + bytes;
    if (needed > 0x7fff_ffff) throw new RangeError('a utf8 column of a shard exceeds 2 GiB; use fewer rows per shard');
    if (needed > this.#bytes.length) {
      const next = Buffer.allocUnsafeSlow(Math.max(needed, this.#bytes.length * 2));
      this.#bytes.copy(next, 0, 0, this.#position);
      this.#bytes = next;
    }
  }

  #next(): void {
    if (this.#count + 1 >= this.#offsets.length) {
      const grown = new Int32Array(this.#offsets.length * 2);
      grown.set(this.#offsets);
      this.#offsets = grown;
    }
    this.#offsets[++this.#count] = this.#position;
  }
}

const HEX = Buffer.from('0123456789abcdef');

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

/**
 * The dense column over `values` (rows × dimension floats; a row without a vector keeps its zeroed
 * slot, as Arrow's fixed_size_list layout requires, and is marked null).
 */
export function denseData(values: Float32Array, validity: ValidityBuilder, length: number, dimension: number): Data {
  const type = denseType(dimension);
  const child = makeData({ type: type.children[0]!.type, length: values.length, nullCount: 0, data: values });
  return makeData({ type, length, nullCount: validity.nullCount, nullBitmap: validity.bitmap(length), child });
}

/** The sparse column: list `offsets` (length + 1) over flat index / value / token children. */
export function sparseData(
  offsets: Int32Array,
  validity: ValidityBuilder,
  length: number,
  entries: { indices: Int32Array; values: Float32Array; tokens: Data<Utf8> },
): Data {
  const total = entries.indices.length;
  const child = makeData({
    type: sparseEntryType(),
    length: total,
    nullCount: 0,
    children: [
      makeData({ type: new Int32(), length: total, nullCount: 0, data: entries.indices }),
      makeData({ type: new Float32(), length: total, nullCount: 0, data: entries.values }),
      entries.tokens,
    ],
  });
  return makeData({ type: sparseType(), length, nullCount: validity.nullCount, nullBitmap: validity.bitmap(length), valueOffsets: offsets, child });
}

/** An int64 column with no nulls. */
export function int64Data(values: BigInt64Array): Data<Int64> {
  return makeData({ type: new Int64(), length: values.length, nullCount: 0, data: values });
}

/** The table of one shard (or row group) from its columns, in the schema's order. */
export function shardTableOf(dimension: number, length: number, children: Data[]): Table {
  const schema = shardSchema(dimension);
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
  return new Table(schema, batch);
}
