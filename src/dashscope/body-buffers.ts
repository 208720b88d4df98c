/**
 * Reusable buffers for response bodies. A 10-text response at dimension 1024 with sparse vectors is
 * ~260 KB; reading it the usual way (chunks, then one concatenated copy) allocated ~520 KB of
 * external memory per request, and external memory is what drives V8's major collections: at a
 * few hundred requests a second that was a mark-compact about every second. The decoder copies
 * everything it keeps (vectors into new Float32Arrays, tokens into strings), so a body's bytes are
 * dead once decoded and the same memory can take the next body.
 */

/** Bodies up to this size are read into pooled buffers; a larger one gets a buffer of its own. */
const MAX_POOLED_BYTES = 4 * 2 ** 20;
/** Smallest pooled buffer: bodies of errors and small batches all fit. */
const MIN_POOLED_BYTES = 64 * 2 ** 10;

export class BodyBuffers {
  readonly #free: Buffer[] = [];

  /** @param maxFree buffers kept for reuse (about the requests whose bodies are read at once). */
  constructor(private readonly maxFree = 16) {}

  /** A buffer of at least `sizeBytes` (its contents are garbage); give it back with `release`. */
  take(sizeBytes: number): Buffer {
    if (sizeBytes <= MAX_POOLED_BYTES) {
      for (let index = this.#free.length - 1; index >= 0; index -= 1) {
        const buffer = this.#free[index]!;
        if (buffer.length >= sizeBytes) {
          this.#free.splice(index, 1);
          return buffer;
        }
      }
    }
    // allocUnsafeSlow: a buffer of its own, not a slice of Node's shared pool, so reusing it is safe.
    return Buffer.allocUnsafeSlow(roundedSize(sizeBytes));
  }

  /** Takes a buffer back; nothing may read it afterwards. */
  release(buffer: Buffer): void {
    if (buffer.length > MAX_POOLED_BYTES || this.#free.includes(buffer)) return;
    if (this.#free.length >= this.maxFree) {
      // Keep the larger ones: a smaller buffer cannot serve a larger body.
      const smallest = this.#free.reduce((min, candidate, index) => (candidate.length < this.#free[min]!.length ? index : min), 0);
      if (this.#free[smallest]!.length >= buffer.length) return;
      this.#free.splice(smallest, 1);
    }
    this.#free.push(buffer);
  }

  /** Buffers waiting for reuse (tests, memory figures). */
  get freeCount(): number {
    return this.#free.length;
  }
}

/** Powers of two from 64 KB: bodies of similar size share buffers. */
function roundedSize(sizeBytes: number): number {
  if (sizeBytes > MAX_POOLED_BYTES) return sizeBytes;
  let size = MIN_POOLED_BYTES;
  while (size < sizeBytes) size *= 2;
  return size;
}
