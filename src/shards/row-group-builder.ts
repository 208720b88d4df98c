import { Buffer } from 'node:buffer';

import type { Table } from 'apache-arrow';

import { type ReusedRow, shardRowOf } from '../reuse/reused-rows.js';
import { denseData, int64Data, shardTableOf, sparseData, Utf8Builder, ValidityBuilder } from './arrow-builders.js';
import { BatchCodecError, decodeBatch } from './batch-codec.js';
import { BatchCursor } from './batch-cursor.js';
import type { ShardRow } from './shard-row.js';

/** What a shard's slices hold: an embedded batch's bytes, or (`--reuse`) a row of a previous shard. */
export type SlicePart = Uint8Array | ReusedRow;

/**
 * A row group's Arrow table built straight from batch bytes, and from previous shards' Arrow
 * buffers: each field is copied into the column buffers, with no object per row or per sparse
 * entry. The table equals `shardTable` of the same rows decoded (arrow-builders.ts is shared), so
 * the file bytes do too.
 */
export class RowGroupBuilder {
  length = 0;
  private readonly rows: BigInt64Array;
  private readonly lines: BigInt64Array;
  private readonly sources: Utf8Builder;
  private readonly ids: Utf8Builder;
  private readonly texts: Utf8Builder;
  private readonly hashes: Utf8Builder;
  private readonly dense: Float32Array;
  private readonly denseValidity: ValidityBuilder;
  private readonly sparseOffsets: Int32Array;
  private readonly sparseValidity: ValidityBuilder;
  private indices: Int32Array;
  private values: Float32Array;
  private entries = 0;
  private readonly tokens: Utf8Builder;

  constructor(
    readonly dimension: number,
    readonly capacity: number,
  ) {
    this.rows = new BigInt64Array(capacity);
    this.lines = new BigInt64Array(capacity);
    this.sources = new Utf8Builder(capacity);
    this.ids = new Utf8Builder(capacity);
    this.texts = new Utf8Builder(capacity);
    this.hashes = new Utf8Builder(capacity);
    this.dense = new Float32Array(capacity * dimension);
    this.denseValidity = new ValidityBuilder(capacity);
    this.sparseOffsets = new Int32Array(capacity + 1);
    this.sparseValidity = new ValidityBuilder(capacity);
    this.indices = new Int32Array(capacity * 64);
    this.values = new Float32Array(capacity * 64);
    this.tokens = new Utf8Builder(capacity * 64);
  }

  get full(): boolean {
    return this.length === this.capacity;
  }

  /** Appends the row the cursor is on. */
  append(cursor: BatchCursor): void {
    const i = this.length;
    const bytes = cursor.bytes;
    if (cursor.row < 0) throw new RangeError(`row must be a non-negative safe integer, got ${cursor.row} (row index ${i} of the shard)`);
    if (cursor.line < 0) throw new RangeError(`line must be a non-negative safe integer, got ${cursor.line} (row index ${i} of the shard)`);
    this.rows[i] = BigInt(cursor.row);
    this.lines[i] = BigInt(cursor.line);
    this.sources.appendBytes(bytes, cursor.sourceStart, cursor.sourceEnd);
    if (cursor.idStart < 0) this.ids.appendNull();
    else this.ids.appendBytes(bytes, cursor.idStart, cursor.idEnd);
    this.texts.appendBytes(bytes, cursor.textStart, cursor.textEnd);
    if (cursor.hashStart < 0) this.hashes.appendNull();
    else this.hashes.appendHex(bytes, cursor.hashStart, cursor.hashStart + 32);
    if (cursor.denseStart < 0) {
      this.denseValidity.setNull(i);
    } else {
      if (cursor.dimension !== this.dimension) throw new RangeError(`row ${cursor.row}: dense vector has ${cursor.dimension} values, expected ${this.dimension}`);
      bytesOf(this.dense).set(bytes.subarray(cursor.denseStart, cursor.denseStart + this.dimension * 4), i * this.dimension * 4);
    }
    if (cursor.sparseCount < 0) this.sparseValidity.setNull(i);
    else this.appendSparse(cursor);
    this.sparseOffsets[i + 1] = this.entries;
    this.length += 1;
  }

  /**
   * Appends a reused row: its number, source, line, id and content key from the reuse list, its
   * text and vectors copied from the previous shard's buffers.
   */
  appendReused({ line, batch, at }: ReusedRow): void {
    const i = this.length;
    if (!Number.isSafeInteger(line.row) || line.row < 0) throw new RangeError(`row must be a non-negative safe integer, got ${line.row} (row index ${i} of the shard)`);
    if (!Number.isSafeInteger(line.line) || line.line < 0) throw new RangeError(`line must be a non-negative safe integer, got ${line.line} (row index ${i} of the shard)`);
    this.rows[i] = BigInt(line.row);
    this.lines[i] = BigInt(line.line);
    this.sources.append(line.source);
    this.ids.append(line.id);
    const text = batch.textBytes(at);
    this.texts.appendBytes(text.bytes, text.start, text.end);
    this.hashes.appendHex(line.hash, 0, line.hash.length);
    const dense = batch.dense(at);
    if (dense === null) {
      this.denseValidity.setNull(i);
    } else {
      if (dense.length !== this.dimension) throw new RangeError(`row ${line.row}: dense vector has ${dense.length} values, expected ${this.dimension}`);
      this.dense.set(dense, i * this.dimension);
    }
    const sparse = batch.sparse(at);
    if (sparse === null) {
      this.sparseValidity.setNull(i);
    } else {
      const first = sparse.offsets[at]!;
      const end = sparse.offsets[at + 1]!;
      this.reserveEntries(end - first);
      this.indices.set(sparse.indices.subarray(first, end), this.entries);
      this.values.set(sparse.values.subarray(first, end), this.entries);
      const { offsets, bytes } = sparse.tokens;
      this.tokens.copyRun(bytes, offsets[first]!, offsets[end]!);
      for (let k = first; k < end; k++) this.tokens.endValue(offsets[k + 1]! - offsets[k]!);
      this.entries += end - first;
    }
    this.sparseOffsets[i + 1] = this.entries;
    this.length += 1;
  }

  /**
   * Empties the builder for the next group, keeping its buffers (the dense column alone is 8 MB at
   * 2,000 rows × 1024): the table it finished last must no longer be in use.
   */
  reset(): void {
    this.length = 0;
    this.entries = 0;
    for (const builder of [this.sources, this.ids, this.texts, this.hashes, this.tokens]) builder.reset();
    this.denseValidity.reset();
    this.sparseValidity.reset();
    // A null row's dense slot must read as zeros, as in a fresh column.
    this.dense.fill(0);
  }

  /** The group's table, a view on the builder's buffers: valid until the next `reset`. */
  finish(): Table {
    const n = this.length;
    return shardTableOf(this.dimension, n, [
      int64Data(this.rows.subarray(0, n)),
      this.sources.finish(),
      int64Data(this.lines.subarray(0, n)),
      this.ids.finish(),
      this.texts.finish(),
      denseData(this.dense.subarray(0, n * this.dimension), this.denseValidity, n, this.dimension),
      sparseData(this.sparseOffsets.subarray(0, n + 1), this.sparseValidity, n, {
        indices: this.indices.subarray(0, this.entries),
        values: this.values.subarray(0, this.entries),
        tokens: this.tokens.finish(),
      }),
      this.hashes.finish(),
    ]);
  }

  private appendSparse(cursor: BatchCursor): void {
    const n = cursor.sparseCount;
    const bytes = cursor.bytes;
    this.reserveEntries(n);
    bytesOf(this.indices).set(bytes.subarray(cursor.indicesStart, cursor.indicesStart + n * 4), this.entries * 4);
    bytesOf(this.values).set(bytes.subarray(cursor.valuesStart, cursor.valuesStart + n * 4), this.entries * 4);
    // Tokens are one run of UTF-8 with each token's length in UTF-16 units: copied whole, then cut
    // by walking the bytes.
    this.tokens.copyRun(bytes, cursor.tokensStart, cursor.tokensEnd);
    let at = cursor.tokensStart;
    for (let j = 0; j < n; j++) {
      const units = cursor.tokenUnits(j);
      let end = at;
      for (let counted = 0; counted < units; ) {
        const lead = bytes[end]!;
        end += lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
        counted += lead < 0xf0 ? 1 : 2;
        if (end > cursor.tokensEnd || counted > units) throw new BatchCodecError(`embedding batch is corrupted: sparse token ${j} of row ${cursor.row} overruns its tokens`);
      }
      this.tokens.endValue(end - at);
      at = end;
    }
    if (at !== cursor.tokensEnd) throw new BatchCodecError(`embedding batch is corrupted: sparse token lengths of row ${cursor.row} do not cover its tokens`);
    this.entries += n;
  }

  /** Room for `n` more sparse entries. */
  private reserveEntries(n: number): void {
    if (this.entries + n <= this.indices.length) return;
    const size = Math.max(this.entries + n, this.indices.length * 2);
    this.indices = grown(this.indices, new Int32Array(size));
    this.values = grown(this.values, new Float32Array(size));
  }
}

function bytesOf(array: Int32Array | Float32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

function grown<T extends Int32Array | Float32Array>(from: T, to: T): T {
  to.set(from);
  return to;
}

/**
 * The shard's rows as row-group tables of `groupRows`, built from `slices` (batches, and with
 * `--reuse` previous rows, a few hundred rows at a time, in row order) as they come: only the slice
 * being read and the group being built exist. Each table is valid until the next one is asked for
 * (one builder's buffers serve every group, so a shard allocates them once; the Parquet writer
 * copies a group into its own memory before it asks for the next).
 * `marked` receives the rows flagged `upsert` (decoded: they are few, and the delta wants rows).
 *
 * The split step numbers a shard's batches in input order and gives each a range of rows after the
 * previous one's, so batch order is row order; merge-rows.ts keeps reused rows in it. Anything
 * else is a bug upstream and throws rather than write a misordered shard. (Reused rows that came
 * out of row order, lines moved between the runs, are sorted whole instead: see shard-thread.ts.)
 */
export async function* batchRowGroups(
  slices: AsyncIterable<readonly SlicePart[]>,
  groupRows: number,
  dimension: number,
  marked: ShardRow[],
): AsyncGenerator<Table> {
  const group = new RowGroupBuilder(dimension, groupRows);
  let last = -1;
  /** Checks the row comes after the one before; true when the group must then be yielded. */
  const added = (row: number, append: () => void): boolean => {
    if (row <= last) throw new Error(`shard batches overlap or are out of order at row ${row}`);
    last = row;
    append();
    return group.full;
  };
  for await (const slice of slices) {
    for (const part of slice) {
      if (part instanceof Uint8Array) {
        const cursor = new BatchCursor(part);
        let upserts = false;
        while (cursor.next()) {
          upserts ||= cursor.upsert;
          if (added(cursor.row, () => group.append(cursor))) {
            yield group.finish();
            group.reset();
          }
        }
        if (upserts) marked.push(...decodeBatch(Buffer.from(part.buffer, part.byteOffset, part.byteLength)).filter((row) => row.upsert === true));
      } else {
        if (part.line.upsert) marked.push(shardRowOf(part));
        if (added(part.line.row, () => group.appendReused(part))) {
          yield group.finish();
          group.reset();
        }
      }
    }
  }
  if (group.length > 0) yield group.finish();
}
