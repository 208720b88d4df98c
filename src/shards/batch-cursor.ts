import { BatchCodecError, HAS_DENSE, HAS_HASH, HAS_ID, HAS_SPARSE, HASH_BYTES, HEADER_BYTES, MAGIC, UPSERT, VERSION } from './batch-codec.js';

/**
 * Walks the rows of an encoded batch (layout in batch-codec.ts) without decoding them: each row's
 * fields are byte ranges of the batch, for copying straight into column buffers. Decoding into
 * ShardRow objects costs a JS object per sparse entry (~80 per line; a million per shard), and
 * on the shard thread that garbage, not the data, made most of the heap. Every length is checked
 * against the buffer, as decodeBatch does.
 */
export class BatchCursor {
  readonly count: number;
  readonly dimension: number;
  row = 0;
  line = 0;
  flags = 0;
  /** `[start, end)` byte ranges; `idStart` -1 when the row has no id. */
  sourceStart = 0;
  sourceEnd = 0;
  idStart = -1;
  idEnd = -1;
  textStart = 0;
  textEnd = 0;
  /** Byte offsets, or -1 when absent. */
  hashStart = -1;
  denseStart = -1;
  /** Sparse entries: -1 when the row has no sparse vector. */
  sparseCount = -1;
  indicesStart = 0;
  valuesStart = 0;
  lengthsStart = 0;
  tokensStart = 0;
  tokensEnd = 0;

  private readonly view: DataView;
  private index = 0;
  private position = 0;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // From byte 0: a batch of no rows (every line of it refused by the provider) is its header alone.
    this.need(HEADER_BYTES, 'header');
    this.position = HEADER_BYTES;
    if (bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1] || bytes[2] !== MAGIC[2]) throw new BatchCodecError('not an embedding batch buffer (bad magic bytes)');
    if (bytes[3] !== VERSION) throw new BatchCodecError(`unsupported embedding batch version ${bytes[3]} (this build reads ${VERSION})`);
    this.count = this.view.getUint32(4, true);
    this.dimension = this.view.getUint32(8, true);
  }

  get upsert(): boolean {
    return (this.flags & UPSERT) !== 0;
  }

  /** Moves to the next row; false after the last (when the batch must also have been read exactly). */
  next(): boolean {
    if (this.index === this.count) {
      if (this.position !== this.bytes.length) throw new BatchCodecError(`embedding batch has ${this.bytes.length - this.position} unexpected trailing bytes`);
      return false;
    }
    const at = this.position;
    this.need(17, `row ${this.index} of ${this.count}`);
    this.row = this.view.getFloat64(at, true);
    this.line = this.view.getFloat64(at + 8, true);
    this.flags = this.bytes[at + 16]!;
    this.position += 17;
    if (this.flags > (HAS_ID | HAS_DENSE | HAS_SPARSE | HAS_HASH | UPSERT) || !Number.isSafeInteger(this.row) || !Number.isSafeInteger(this.line)) {
      throw new BatchCodecError(`embedding batch is corrupted at byte ${at} (row ${this.index} of ${this.count})`);
    }
    [this.sourceStart, this.sourceEnd] = this.string('source');
    [this.idStart, this.idEnd] = this.flags & HAS_ID ? this.string('id') : [-1, -1];
    [this.textStart, this.textEnd] = this.string('text');
    this.hashStart = this.flags & HAS_HASH ? this.skip(HASH_BYTES, 'content hash') : -1;
    this.denseStart = -1;
    if (this.flags & HAS_DENSE) {
      this.align4();
      this.denseStart = this.skip(this.dimension * 4, 'dense vector');
    }
    this.sparseCount = -1;
    if (this.flags & HAS_SPARSE) {
      const n = this.u32('sparse length');
      this.align4();
      this.indicesStart = this.skip(n * 4, `${n} sparse indices`);
      this.valuesStart = this.skip(n * 4, `${n} sparse values`);
      this.lengthsStart = this.skip(n * 4, `${n} sparse token lengths`);
      [this.tokensStart, this.tokensEnd] = this.string('sparse tokens');
      this.sparseCount = n;
    }
    this.index += 1;
    return true;
  }

  /** Token `j`'s length in UTF-16 code units, as the batch records it. */
  tokenUnits(j: number): number {
    return this.view.getUint32(this.lengthsStart + j * 4, true);
  }

  index32(j: number): number {
    return this.view.getInt32(this.indicesStart + j * 4, true);
  }

  value32(j: number): number {
    return this.view.getFloat32(this.valuesStart + j * 4, true);
  }

  private need(bytes: number, what: string): void {
    if (this.position + bytes > this.bytes.length) {
      throw new BatchCodecError(`embedding batch is truncated: ${what} needs ${bytes} bytes at byte ${this.position}, buffer has ${this.bytes.length}`);
    }
  }

  private u32(what: string): number {
    this.need(4, what);
    const value = this.view.getUint32(this.position, true);
    this.position += 4;
    return value;
  }

  private skip(bytes: number, what: string): number {
    this.need(bytes, what);
    const at = this.position;
    this.position += bytes;
    return at;
  }

  private string(what: string): [number, number] {
    const length = this.u32(`${what} length`);
    const start = this.skip(length, what);
    return [start, start + length];
  }

  /** Padding is relative to the start of the batch, as the encoder wrote it. */
  private align4(): void {
    this.position = (this.position + 3) & ~3;
  }
}
