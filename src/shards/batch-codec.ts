import { Buffer } from 'node:buffer';

import type { SparseEntry } from '../embedding.js';
import { EmbedqError } from '../errors.js';
import type { ShardRow } from './shard-row.js';

/**
 * The binary form of one embedding batch's rows, kept in Redis between the embed step and
 * the shard writer. Vectors travel as Float32 bytes, never as JSON (DESIGN invariant 3).
 *
 * Layout, little-endian throughout:
 *
 * ```
 * header   "EQB" u8 version=1 | u32 rowCount | u32 dimension
 * per row  f64 row | f64 line | u8 flags (1 id, 2 dense, 4 sparse, 8 content hash, 16 upsert)
 *          str source | [str id] | str text | [32 bytes content hash]
 *          [pad to 4 | dimension × f32 dense]
 *          [u32 n | pad to 4 | n × i32 index | n × f32 value | n × u32 token length (UTF-16 units)
 *           | u32 tokenBytes | tokenBytes of all tokens' UTF-8, concatenated]
 * str      u32 byteLength | UTF-8 bytes
 * ```
 *
 * `row` and `line` are f64 because they are JS numbers and may pass 2^32; any safe integer is
 * exact. Padding (zero bytes) is relative to the start of the buffer, so the encoder writes
 * floats through aligned typed-array views. Sparse values are stored as float32, as in the
 * shard, so a value that is not a float32 comes back as `Math.fround(value)`.
 */

// Exported for batch-cursor.ts, which reads the same layout without decoding it into objects.
export const MAGIC = [0x45, 0x51, 0x42] as const; // "EQB"
export const VERSION = 1;
export const HEADER_BYTES = 12;
export const HAS_ID = 1;
export const HAS_DENSE = 2;
export const HAS_SPARSE = 4;
export const HAS_HASH = 8;
/** The row goes to `_delta/upserts-*` too (`--reuse --id-field`: its id is new or its text changed). */
export const UPSERT = 16;
export const HASH_BYTES = 32;
const HEX_HASH = /^[0-9a-f]{64}$/;

// Typed-array views use the platform's byte order; the format is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('batch-codec assumes a little-endian platform');
}

/** A batch buffer that cannot be decoded: truncated, corrupted, or from an unknown version. */
export class BatchCodecError extends EmbedqError {
  readonly code = 'BATCH_CORRUPT';
  // The same bytes will never decode; the batch has to be embedded again.
  readonly retryable = false;
}

/**
 * Encodes the rows of one batch.
 *
 * @param rows the rows, in any order (kept as given)
 * @param dimension length of every non-null dense vector
 * @returns a Buffer holding exactly the encoded bytes (it may be a view on a larger allocation)
 * @throws RangeError when a dense vector's length is not `dimension`, or a row/line number is
 *   not a safe integer
 */
export function encodeBatch(rows: readonly ShardRow[], dimension: number): Buffer {
  if (!Number.isInteger(dimension) || dimension < 0 || dimension > 0xffff_ffff) {
    throw new RangeError(`dimension must be a non-negative integer, got ${dimension}`);
  }
  // allocUnsafeSlow: an ArrayBuffer of our own at byteOffset 0, so buffer offsets that are
  // multiples of 4 are aligned for Float32Array/Int32Array views. Every byte returned is written.
  const out = Buffer.allocUnsafeSlow(maxEncodedBytes(rows, dimension));
  out[0] = MAGIC[0];
  out[1] = MAGIC[1];
  out[2] = MAGIC[2];
  out[3] = VERSION;
  out.writeUInt32LE(rows.length, 4);
  out.writeUInt32LE(dimension, 8);
  let p = HEADER_BYTES;
  for (const row of rows) {
    if (!Number.isSafeInteger(row.row) || !Number.isSafeInteger(row.line)) {
      throw new RangeError(`row ${row.row}, line ${row.line}: row and line must be safe integers`);
    }
    p = out.writeDoubleLE(row.row, p);
    p = out.writeDoubleLE(row.line, p);
    const hash = row.contentHash ?? null;
    if (hash !== null && !HEX_HASH.test(hash)) throw new RangeError(`row ${row.row}: content hash must be 64 lowercase hex digits`);
    out[p++] =
      (row.id === null ? 0 : HAS_ID) | (row.dense === null ? 0 : HAS_DENSE) | (row.sparse === null ? 0 : HAS_SPARSE) | (hash === null ? 0 : HAS_HASH) | (row.upsert ? UPSERT : 0);
    p = writeString(out, p, row.source);
    if (row.id !== null) {
      p = writeString(out, p, row.id);
    }
    p = writeString(out, p, row.text);
    if (hash !== null) p += out.write(hash, p, 'hex');
    if (row.dense !== null) {
      if (row.dense.length !== dimension) {
        throw new RangeError(`row ${row.row}: dense vector has ${row.dense.length} values, expected ${dimension}`);
      }
      p = pad4(out, p);
      new Float32Array(out.buffer, out.byteOffset + p, dimension).set(row.dense);
      p += dimension * 4;
    }
    if (row.sparse !== null) {
      p = writeSparse(out, p, row.sparse);
    }
  }
  return out.subarray(0, p);
}

/**
 * Decodes a buffer made by {@link encodeBatch}. Every vector is a fresh copy: nothing aliases
 * `buffer`, which the caller may reuse.
 *
 * @throws BatchCodecError when the buffer is truncated, has trailing bytes, or is not a batch
 */
export function decodeBatch(buffer: Buffer): ShardRow[] {
  const reader = new Reader(buffer);
  reader.need(HEADER_BYTES, 'header');
  if (buffer[0] !== MAGIC[0] || buffer[1] !== MAGIC[1] || buffer[2] !== MAGIC[2]) {
    throw new BatchCodecError('not an embedding batch buffer (bad magic bytes)');
  }
  if (buffer[3] !== VERSION) {
    throw new BatchCodecError(`unsupported embedding batch version ${buffer[3]} (this build reads ${VERSION})`);
  }
  const count = buffer.readUInt32LE(4);
  const dimension = buffer.readUInt32LE(8);
  reader.position = HEADER_BYTES;
  // A row takes at least 25 bytes; check before a corrupted count allocates a huge array.
  reader.need(count * 25, `${count} rows`);
  const rows: ShardRow[] = new Array<ShardRow>(count);
  for (let i = 0; i < count; i++) {
    reader.need(17, `row ${i} of ${count}`);
    const row = buffer.readDoubleLE(reader.position);
    const line = buffer.readDoubleLE(reader.position + 8);
    const flags = buffer[reader.position + 16]!;
    reader.position += 17;
    if (flags > (HAS_ID | HAS_DENSE | HAS_SPARSE | HAS_HASH | UPSERT) || !Number.isSafeInteger(row) || !Number.isSafeInteger(line)) {
      throw new BatchCodecError(`embedding batch is corrupted at byte ${reader.position - 17} (row ${i} of ${count})`);
    }
    const source = reader.string('source');
    const id = flags & HAS_ID ? reader.string('id') : null;
    const text = reader.string('text');
    const contentHash = flags & HAS_HASH ? reader.bytes(HASH_BYTES, 'content hash').toString('hex') : null;
    let dense: Float32Array | null = null;
    if (flags & HAS_DENSE) {
      reader.align4();
      const bytes = reader.bytes(dimension * 4, 'dense vector'); // checked before allocating
      dense = new Float32Array(dimension);
      new Uint8Array(dense.buffer).set(bytes);
    }
    const sparse = flags & HAS_SPARSE ? reader.sparse() : null;
    rows[i] = { row, source, line, id, text, dense, sparse, ...(contentHash === null ? {} : { contentHash }), ...(flags & UPSERT ? { upsert: true } : {}) };
  }
  if (reader.position !== buffer.length) {
    throw new BatchCodecError(`embedding batch has ${buffer.length - reader.position} unexpected trailing bytes`);
  }
  return rows;
}

function writeSparse(out: Buffer, start: number, sparse: readonly SparseEntry[]): number {
  const n = sparse.length;
  let p = out.writeUInt32LE(n, start);
  p = pad4(out, p);
  const indices = new Int32Array(out.buffer, out.byteOffset + p, n);
  const values = new Float32Array(out.buffer, out.byteOffset + p + n * 4, n);
  const lengths = new Uint32Array(out.buffer, out.byteOffset + p + n * 8, n);
  const tokensAt = p + n * 12;
  // The tokens form one UTF-8 string (decoded in one call, see Reader.sparse). Short ASCII
  // tokens, nearly all of them, are copied by hand: a native write per token costs more.
  let q = tokensAt + 4;
  for (let j = 0; j < n; j++) {
    const entry = sparse[j]!;
    const token = entry.token;
    indices[j] = entry.index;
    values[j] = entry.value;
    lengths[j] = token.length;
    let k = 0;
    if (token.length <= 32) {
      for (; k < token.length; k++) {
        const code = token.charCodeAt(k);
        if (code >= 0x80) {
          break;
        }
        out[q + k] = code;
      }
    }
    q += k === token.length ? k : out.write(token, q, 'utf8');
  }
  out.writeUInt32LE(q - tokensAt - 4, tokensAt);
  return q;
}

function writeString(out: Buffer, p: number, value: string): number {
  const written = out.write(value, p + 4, 'utf8');
  out.writeUInt32LE(written, p);
  return p + 4 + written;
}

function pad4(out: Buffer, p: number): number {
  while (p & 3) {
    out[p++] = 0;
  }
  return p;
}

/** An upper bound of the encoded size: 3 UTF-8 bytes per UTF-16 code unit at most. */
function maxEncodedBytes(rows: readonly ShardRow[], dimension: number): number {
  let bytes = HEADER_BYTES;
  for (const row of rows) {
    bytes += 17 + 12 + HASH_BYTES + 3 * (row.source.length + (row.id?.length ?? 0) + row.text.length);
    if (row.dense !== null) {
      bytes += 3 + 4 * Math.max(dimension, row.dense.length);
    }
    if (row.sparse !== null) {
      bytes += 4 + 3 + 4;
      for (const entry of row.sparse) {
        bytes += 12 + 3 * entry.token.length;
      }
    }
  }
  return bytes;
}

/** Bounds-checked reading; every failure names what was being read and where. */
class Reader {
  position = 0;

  constructor(private readonly buffer: Buffer) {}

  need(bytes: number, what: string): void {
    if (this.position + bytes > this.buffer.length) {
      throw new BatchCodecError(
        `embedding batch is truncated: ${what} needs ${bytes} bytes at byte ${this.position}, buffer has ${this.buffer.length}`,
      );
    }
  }

  bytes(length: number, what: string): Buffer {
    this.need(length, what);
    const bytes = this.buffer.subarray(this.position, this.position + length);
    this.position += length;
    return bytes;
  }

  u32(what: string): number {
    this.need(4, what);
    const value = this.buffer.readUInt32LE(this.position);
    this.position += 4;
    return value;
  }

  string(what: string): string {
    const length = this.u32(`${what} length`);
    this.need(length, what);
    const value = this.buffer.toString('utf8', this.position, this.position + length);
    this.position += length;
    return value;
  }

  int32s(n: number): Int32Array {
    const at = this.take(n);
    return at === null ? new Int32Array(this.copy(n)) : new Int32Array(this.buffer.buffer, at, n);
  }

  float32s(n: number): Float32Array {
    const at = this.take(n);
    return at === null ? new Float32Array(this.copy(n)) : new Float32Array(this.buffer.buffer, at, n);
  }

  uint32s(n: number): Uint32Array {
    const at = this.take(n);
    return at === null ? new Uint32Array(this.copy(n)) : new Uint32Array(this.buffer.buffer, at, n);
  }

  /** The absolute byte offset of the next `n` words if aligned (and advances), else null. */
  private take(n: number): number | null {
    this.need(n * 4, 'sparse entries');
    const at = this.buffer.byteOffset + this.position;
    if (at & 3) {
      return null;
    }
    this.position += n * 4;
    return at;
  }

  private copy(n: number): ArrayBuffer {
    const copy = new Uint8Array(n * 4);
    copy.set(this.bytes(n * 4, 'sparse entries'));
    return copy.buffer;
  }

  align4(): void {
    this.position = (this.position + 3) & ~3;
  }

  sparse(): SparseEntry[] {
    const n = this.u32('sparse length');
    this.align4();
    this.need(n * 12, `${n} sparse entries`); // checked before allocating
    // Read through views when the bytes are 4-byte aligned in memory (always, for a buffer
    // of its own), else through a copy; either way they are used only inside this call.
    const indices = this.int32s(n);
    const values = this.float32s(n);
    const lengths = this.uint32s(n);
    // One decode of all tokens, then cheap slices: decoding a hundred short strings one by
    // one costs more than the rest of the batch together.
    const tokens = this.string('sparse tokens');
    const entries = new Array<SparseEntry>(n);
    let at = 0;
    for (let j = 0; j < n; j++) {
      const end = at + lengths[j]!;
      entries[j] = { index: indices[j]!, value: values[j]!, token: tokens.slice(at, end) };
      at = end;
    }
    if (at !== tokens.length) {
      throw new BatchCodecError(`embedding batch is corrupted: sparse token lengths add up to ${at}, tokens have ${tokens.length}`);
    }
    return entries;
  }
}
