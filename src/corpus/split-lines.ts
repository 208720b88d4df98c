/** A line longer than the limit: its bytes were dropped, only its size is known. */
export interface OversizedLine {
  oversizedBytes: number;
}

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/**
 * Splits a byte stream into lines, chunk by chunk, on `\n` bytes (never decoding, so a multi-byte
 * character split across chunks is no problem and invalid bytes stay confined to their line).
 * A trailing `\r` is stripped, a UTF-8 BOM at the very start is dropped, a final line without a
 * newline counts, and a newline at the very end adds no empty line. Lines longer than
 * `maxLineBytes` come out as OversizedLine, and their bytes are not kept, so memory stays bounded.
 * Pure and synchronous: the caller feeds chunks and gets the lines each one completes.
 */
export class LineSplitter {
  /**
   * Where each line the last `push` or `end` returned starts in the input, by index: its first
   * byte's offset, counting from `startOffset`. A reader can later start there (a ranged read).
   */
  readonly starts: number[] = [];
  readonly #maxLineBytes: number;
  /** Offset of the current, unfinished line's first byte. */
  #lineStart: number;
  /** Bytes of the current, unfinished line (pieces of earlier chunks). */
  #pieces: Buffer[] = [];
  #pendingBytes = 0;
  #oversized = false;
  #firstLine = true;

  /** `startOffset`: the input starts at this byte of the object (a BOM is only looked for at 0). */
  constructor(options: { maxLineBytes: number; startOffset?: number }) {
    this.#maxLineBytes = options.maxLineBytes;
    this.#lineStart = options.startOffset ?? 0;
    this.#firstLine = this.#lineStart === 0;
  }

  /** The lines `chunk` completes, in order. Returned buffers may share memory with `chunk`. */
  push(chunk: Buffer): (Buffer | OversizedLine)[] {
    const lines: (Buffer | OversizedLine)[] = [];
    this.starts.length = 0;
    let start = 0;
    let newline = chunk.indexOf(NEWLINE, start);
    while (newline !== -1) {
      lines.push(this.#finish(chunk.subarray(start, newline)));
      start = newline + 1;
      newline = chunk.indexOf(NEWLINE, start);
    }
    if (start < chunk.length) this.#keep(chunk.subarray(start));
    return lines;
  }

  /** The final line, if the input did not end with a newline (nothing, or a lone BOM, is no line). */
  end(): (Buffer | OversizedLine)[] {
    this.starts.length = 0;
    if (this.#pendingBytes === 0) return [];
    const onlyBomPossible = this.#firstLine && this.#pendingBytes === 3;
    const last = this.#finish(Buffer.alloc(0));
    // Three bytes that come out empty were a BOM (a stripped `\r` would leave two).
    if (onlyBomPossible && last instanceof Buffer && last.length === 0) return [];
    return [last];
  }

  #keep(piece: Buffer): void {
    this.#pendingBytes += piece.length;
    if (this.#oversized) return;
    if (this.#pendingBytes > this.#maxLineBytes) {
      this.#oversized = true;
      this.#pieces = [];
      return;
    }
    this.#pieces.push(piece);
  }

  #finish(tail: Buffer): Buffer | OversizedLine {
    const sizeBytes = this.#pendingBytes + tail.length;
    const oversized = this.#oversized || sizeBytes > this.#maxLineBytes;
    const pieces = this.#pieces;
    this.#pieces = [];
    this.#pendingBytes = 0;
    this.#oversized = false;
    const firstLine = this.#firstLine;
    this.#firstLine = false;
    this.starts.push(this.#lineStart);
    this.#lineStart += sizeBytes + 1; // and its newline
    if (oversized) return { oversizedBytes: sizeBytes };

    let line = pieces.length === 0 ? tail : Buffer.concat([...pieces, tail], sizeBytes);
    if (firstLine && line.length >= 3 && line[0] === 0xef && line[1] === 0xbb && line[2] === 0xbf) {
      line = line.subarray(3);
    }
    if (line.length > 0 && line[line.length - 1] === CARRIAGE_RETURN) line = line.subarray(0, line.length - 1);
    return line;
  }
}
