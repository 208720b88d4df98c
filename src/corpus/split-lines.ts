/** A line longer than the limit: its bytes were dropped, only its size is known. */
export interface OversizedLine {
  oversizedBytes: number;
}

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/**
 * How an object's lines end, decided by its first line break: `\n` (a `\r` before it is
 * stripped, other `\r` bytes are text), or a lone `\r` (classic Mac files, some exports), after
 * which `\r`, `\n` and `\r\n` all end lines, as Spark's and Python's readers split. Without the
 * second mode such a file was one line, truncated to the token limit when embedded.
 */
type LineBreaks = 'undecided' | 'newline' | 'any';

/**
 * Splits a byte stream into lines, chunk by chunk, on line breaks (never decoding, so a multi-byte
 * character split across chunks is no problem and invalid bytes stay confined to their line).
 * Lines end at `\n` (a trailing `\r` is stripped), unless the object's first line break is a lone
 * `\r`: then at `\r`, `\n` or `\r\n` (see LineBreaks). A UTF-8 BOM at the very start is dropped, a
 * final line without a line break counts, and a line break at the very end adds no empty line.
 * Lines longer than `maxLineBytes` come out as OversizedLine, and their bytes are not kept, so
 * memory stays bounded. Pure and synchronous: the caller feeds chunks and gets the lines each one
 * completes.
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
  #lineBreaks: LineBreaks;
  /** Undecided: the last chunk ended in the object's first `\r` (not kept); the next byte decides. */
  #undecidedReturn = false;
  /** Any line break: the last chunk ended in `\r`, so a `\n` first in the next one is its other half. */
  #skipNewline = false;

  /**
   * `startOffset`: the input starts at this byte of the object (a BOM is only looked for at 0, and
   * lines end at `\n`: a reader only starts mid-object in objects read that way, see `anyLineBreak`).
   */
  constructor(options: { maxLineBytes: number; startOffset?: number }) {
    this.#maxLineBytes = options.maxLineBytes;
    this.#lineStart = options.startOffset ?? 0;
    this.#firstLine = this.#lineStart === 0;
    this.#lineBreaks = this.#firstLine ? 'undecided' : 'newline';
  }

  /** Whether lines end at any line break (the object's first was a lone `\r`); `starts` then are not for ranged reads. */
  get anyLineBreak(): boolean {
    return this.#lineBreaks === 'any';
  }

  /** The lines `chunk` completes, in order. Returned buffers may share memory with `chunk`. */
  push(chunk: Buffer): (Buffer | OversizedLine)[] {
    const lines: (Buffer | OversizedLine)[] = [];
    this.starts.length = 0;
    if (chunk.length === 0) return lines;
    if (this.#lineBreaks === 'undecided' && !this.#decide(chunk, lines)) return lines;
    if (this.#lineBreaks === 'newline') this.#splitOnNewlines(chunk, lines);
    else this.#splitOnAnyBreak(chunk, lines);
    return lines;
  }

  /** The final line, if the input did not end with a line break (nothing, or a lone BOM, is no line). */
  end(): (Buffer | OversizedLine)[] {
    this.starts.length = 0;
    if (this.#undecidedReturn) this.#keep(Buffer.of(CARRIAGE_RETURN)); // stripped below, as a CRLF's
    if (this.#pendingBytes === 0) return [];
    const onlyBomPossible = this.#firstLine && this.#pendingBytes === 3;
    const last = this.#finish(Buffer.alloc(0));
    // Three bytes that come out empty were a BOM (a stripped `\r` would leave two).
    if (onlyBomPossible && last instanceof Buffer && last.length === 0) return [];
    return [last];
  }

  /**
   * Settles the line breaks from the object's first one, if `chunk` shows it: false when it does
   * not (`chunk` is kept). Only the first line is open while undecided, so nothing is split yet.
   */
  #decide(chunk: Buffer, lines: (Buffer | OversizedLine)[]): boolean {
    if (this.#undecidedReturn) {
      this.#undecidedReturn = false;
      if (chunk[0] === NEWLINE) {
        this.#keep(Buffer.of(CARRIAGE_RETURN)); // a CRLF across chunks: the `\r` is the line's
        this.#lineBreaks = 'newline';
      } else {
        lines.push(this.#finish(Buffer.alloc(0)));
        this.#lineBreaks = 'any';
      }
      return true;
    }
    const newline = chunk.indexOf(NEWLINE);
    const carriageReturn = chunk.indexOf(CARRIAGE_RETURN);
    if (carriageReturn === -1 || (newline !== -1 && newline < carriageReturn)) {
      if (newline === -1) {
        this.#keep(chunk);
        return false;
      }
      this.#lineBreaks = 'newline';
      return true;
    }
    if (carriageReturn === chunk.length - 1) {
      this.#keep(chunk.subarray(0, carriageReturn));
      this.#undecidedReturn = true;
      return false;
    }
    this.#lineBreaks = chunk[carriageReturn + 1] === NEWLINE ? 'newline' : 'any';
    return true;
  }

  #splitOnNewlines(chunk: Buffer, lines: (Buffer | OversizedLine)[]): void {
    let start = 0;
    let newline = chunk.indexOf(NEWLINE, start);
    while (newline !== -1) {
      lines.push(this.#finish(chunk.subarray(start, newline)));
      start = newline + 1;
      newline = chunk.indexOf(NEWLINE, start);
    }
    if (start < chunk.length) this.#keep(chunk.subarray(start));
  }

  #splitOnAnyBreak(chunk: Buffer, lines: (Buffer | OversizedLine)[]): void {
    let start = 0;
    if (this.#skipNewline) {
      this.#skipNewline = false;
      if (chunk[0] === NEWLINE) {
        start = 1;
        this.#lineStart += 1;
      }
    }
    // Each found position is kept until passed, so the chunk is scanned once for each byte value.
    let newline = chunk.indexOf(NEWLINE, start);
    let carriageReturn = chunk.indexOf(CARRIAGE_RETURN, start);
    while (newline !== -1 || carriageReturn !== -1) {
      const lineBreak = newline === -1 ? carriageReturn : carriageReturn === -1 ? newline : Math.min(newline, carriageReturn);
      lines.push(this.#finish(chunk.subarray(start, lineBreak)));
      start = lineBreak + 1;
      if (lineBreak === carriageReturn) {
        if (start === chunk.length) this.#skipNewline = true;
        else if (chunk[start] === NEWLINE) {
          start += 1;
          this.#lineStart += 1;
        }
      }
      if (newline !== -1 && newline < start) newline = chunk.indexOf(NEWLINE, start);
      if (carriageReturn !== -1 && carriageReturn < start) carriageReturn = chunk.indexOf(CARRIAGE_RETURN, start);
    }
    if (start < chunk.length) this.#keep(chunk.subarray(start));
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
