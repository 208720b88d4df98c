import { type Data, DataType, type FixedSizeList, type RecordBatch } from 'apache-arrow';

import type { SparseEntry } from '../embedding.js';

/** A previous row's vectors, with its text and content hash, decoded into values. */
export interface PreviousRowVectors {
  text: string;
  contentHash: string | null;
  dense: Float32Array | null;
  sparse: SparseEntry[] | null;
}

/** A utf8 column's buffers: value `i` is `bytes[offsets[i], offsets[i + 1])`. */
export interface Utf8Buffers {
  offsets: Int32Array;
  bytes: Uint8Array;
}

/** The flat children of a sparse column: row `i`'s entries are `[offsets[i], offsets[i + 1])`. */
export interface SparseBuffers {
  offsets: Int32Array;
  indices: Int32Array;
  values: Float32Array;
  tokens: Utf8Buffers;
}

const decoder = new TextDecoder();

/**
 * One record batch of a previous shard (`text`, `dense`, `sparse`, `content_hash`), its column
 * buffers resolved once, so that a reused row can be copied into a new row group byte for byte
 * (src/shards/row-group-builder.ts) without becoming objects: at dimension 1024 with sparse, a row
 * decoded into values is ~60 entry objects and strings, and a shard's worth of them was most of the
 * shard thread's heap in a reindex.
 *
 * The batch comes from the IPC reader, whose data has no offsets: a row's index is its index into
 * each buffer. A column the file does not have reads as null in every row.
 */
export class PreviousBatch {
  readonly length: number;
  private readonly text: Column<Utf8Buffers>;
  private readonly hash: Column<Utf8Buffers>;
  private readonly denseColumn: Column<{ values: Float32Array; size: number }>;
  private readonly sparseColumn: Column<SparseBuffers>;

  constructor(batch: RecordBatch) {
    this.length = batch.numRows;
    const data = (name: string): Data | undefined => {
      const index = batch.schema.fields.findIndex((field) => field.name === name);
      const found = index < 0 ? undefined : (batch.data.children[index] as Data);
      if (found && found.offset !== 0) throw new Error(`column ${name} of a previous shard is a slice (offset ${found.offset}); expected IPC data`);
      return found;
    };
    this.text = column(data('text'), utf8Buffers);
    this.hash = column(data('content_hash'), utf8Buffers);
    this.denseColumn = column(data('dense'), (dense) => {
      // The Arrow schema embedded in the file gives fixed_size_list back (Parquet itself has lists).
      if (!DataType.isFixedSizeList(dense.type)) throw new Error(`column dense of a previous shard is ${String(dense.type)}, not a fixed_size_list`);
      return { values: dense.children[0]!.values as Float32Array, size: (dense.type as FixedSizeList).listSize };
    });
    this.sparseColumn = column(data('sparse'), (sparse) => {
      const entries = sparse.children[0]!;
      return {
        offsets: sparse.valueOffsets as Int32Array,
        indices: entries.children[0]!.values as Int32Array,
        values: entries.children[1]!.values as Float32Array,
        tokens: utf8Buffers(entries.children[2]!),
      };
    });
  }

  /** Row `at`'s text as UTF-8: `[start, end)` of `bytes` (empty when null). */
  textBytes(at: number): { bytes: Uint8Array; start: number; end: number } {
    const text = this.text.at(at);
    if (text === null) return { bytes: EMPTY, start: 0, end: 0 };
    return { bytes: text.bytes, start: text.offsets[at]!, end: text.offsets[at + 1]! };
  }

  /** Whether row `at`'s `content_hash` is the hex of `key` (lowercase, as written). */
  hashIs(at: number, key: Uint8Array): boolean {
    const hash = this.hash.at(at);
    if (hash === null) return false;
    const start = hash.offsets[at]!;
    if (hash.offsets[at + 1]! - start !== key.length * 2) return false;
    for (let i = 0; i < key.length; i++) {
      if (hash.bytes[start + 2 * i] !== HEX[key[i]! >> 4] || hash.bytes[start + 2 * i + 1] !== HEX[key[i]! & 15]) return false;
    }
    return true;
  }

  /** Row `at`'s dense vector, a view on the batch (null when null or absent). */
  dense(at: number): Float32Array | null {
    const dense = this.denseColumn.at(at);
    return dense === null ? null : dense.values.subarray(at * dense.size, (at + 1) * dense.size);
  }

  /** The sparse column's buffers when row `at` has a sparse vector (its entries: `offsets[at]` to `offsets[at + 1]`). */
  sparse(at: number): SparseBuffers | null {
    return this.sparseColumn.at(at);
  }

  /** Row `at` decoded into values: for shards sorted whole, the delta, and tests. */
  row(at: number): PreviousRowVectors {
    const { bytes, start, end } = this.textBytes(at);
    const hash = this.hash.at(at);
    const dense = this.dense(at);
    return {
      text: decoder.decode(bytes.subarray(start, end)),
      contentHash: hash === null ? null : decoder.decode(hash.bytes.subarray(hash.offsets[at], hash.offsets[at + 1])),
      // A copy: a decoded row may outlive the batch's buffers' use.
      dense: dense === null ? null : dense.slice(),
      sparse: this.sparseEntries(at),
    };
  }

  private sparseEntries(at: number): SparseEntry[] | null {
    const sparse = this.sparse(at);
    if (sparse === null) return null;
    const { offsets, indices, values, tokens } = sparse;
    const entries: SparseEntry[] = [];
    for (let k = offsets[at]!; k < offsets[at + 1]!; k++) {
      entries.push({ index: indices[k]!, value: values[k]!, token: decoder.decode(tokens.bytes.subarray(tokens.offsets[k], tokens.offsets[k + 1])) });
    }
    return entries;
  }
}

const EMPTY = new Uint8Array(0);
const HEX = new TextEncoder().encode('0123456789abcdef');

/** A column's buffers, and null for the rows that are null (or all rows, when the column is absent). */
interface Column<T> {
  at(index: number): T | null;
}

function column<T>(data: Data | undefined, resolve: (data: Data) => T): Column<T> {
  if (data === undefined) return { at: () => null };
  const buffers = resolve(data);
  return { at: (index) => (data.getValid(index) ? buffers : null) };
}

function utf8Buffers(data: Data): Utf8Buffers {
  return { offsets: data.valueOffsets as Int32Array, bytes: data.values as Uint8Array };
}
