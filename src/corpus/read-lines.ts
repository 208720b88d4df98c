import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

import { isLosslessNumber, parse as parseLossless } from 'lossless-json';

import { CorruptInputError, EmbedqError, InputLineError, StorageUnavailableError, type InputLineErrorCode } from '../errors.js';
import { heldExactly } from './exact-number.js';
import type { CorpusObject } from './list-corpus.js';
import { LineSplitter, type OversizedLine } from './split-lines.js';
import { utf16ByteOrder, utf16ToUtf8, type Utf16ByteOrder } from './utf16.js';
import { decodeUtf8Strict, firstInvalidUtf8Offset } from './utf8.js';

/** `text`: one item per line. `jsonl`: one JSON object per line, the text in `textField`. */
export type CorpusFormat = 'text' | 'jsonl';

/** How to read one object's lines (the `--format`, `--text-field` and `--id-field` options). */
export interface ReadCorpusLinesOptions {
  /** Overrides the format chosen by extension (see `formatOf`). */
  format?: CorpusFormat | undefined;
  /** JSON Lines: the field holding the text; dotted paths (`meta.body`) reach nested objects (Default: `text`). */
  textField?: string | undefined;
  /** JSON Lines: the field holding the id (dotted paths too); none means every id is null. */
  idField?: string | undefined;
  /** Longer lines become a TEXT_TOO_LONG record without being held in memory (Default: 16 MiB). */
  maxLineBytes?: number | undefined;
  /**
   * Called with the version of the object being read (ObjectStore.open) before its first line;
   * what it throws ends the read. The split checks that a corpus read again is the one it read.
   */
  verify?: ((version: string) => Promise<void>) | undefined;
  /**
   * Start at this line instead of the first: `offset` is its first byte (a CorpusLine's `offset`
   * from an earlier read of the same version), `line` its number. Only for objects that are not
   * gzipped, whose lines have offsets; a split that starts again resumes mid-object this way.
   */
  from?: { offset: number; line: number } | undefined;
  /** Give each line of an object that is not gzipped its `offset`. */
  offsets?: boolean | undefined;
}

/**
 * One line of a corpus object. `line` is 0-based within `source`; every line of the object comes
 * out exactly once, in order, as text to embed, a blank (skipped, but numbered), or an error.
 */
export type CorpusLine = (
  | { kind: 'text'; source: string; line: number; text: string; id: string | null }
  | { kind: 'blank'; source: string; line: number }
  /** `id`: a JSON Lines line's `--id-field`, when the line has one (its record names it). */
  | { kind: 'error'; source: string; line: number; code: InputLineErrorCode; message: string; id?: string }
) & {
  /** With `offsets`: the line's first byte in the object, for `from`; none in a gzipped object (no ranged reads there). */
  offset?: number;
};

/**
 * Lines above this many bytes are not held in memory (they become TEXT_TOO_LONG records). Far above
 * anything DashScope accepts (8,192 tokens), so it only guards memory against newline-less files.
 */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const GZIP_MAGIC = [0x1f, 0x8b] as const;

/**
 * Compressions and archives embedq does not read, by their first bytes: read as text they gave
 * garbage rows and INVALID_UTF8 records that never said why. bzip2's `BZh` is only taken with the
 * block (or end-of-stream) magic after it, so a text line starting "BZh" is still text.
 */
const UNSUPPORTED_FORMATS: { name: string; at: number; magic: Buffer | RegExp; fix?: string }[] = [
  { name: 'bzip2-compressed', at: 0, magic: /^BZh[1-9](1AY&SY|\x17rE8P\x90)/ },
  // Met only once inflated (gzip bytes are gunzipped first): gzip run twice, or a .gz stored with
  // `Content-Encoding: gzip` by a tool that compressed it again. Its rows were garbage.
  { name: 'gzip-compressed', at: 0, magic: Buffer.of(0x1f, 0x8b, 0x08) },
  { name: 'zstd-compressed', at: 0, magic: Buffer.of(0x28, 0xb5, 0x2f, 0xfd) },
  { name: 'xz-compressed', at: 0, magic: Buffer.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00) },
  // POSIX (`ustar\0`) and GNU (`ustar  \0`) headers name themselves at byte 257.
  { name: 'a tar archive', at: 257, magic: /^ustar[\0 ]/ },
  // A local file header (stored or deflated alike): stored text was read with its headers as lines.
  { name: 'a zip archive', at: 0, magic: Buffer.of(0x50, 0x4b, 0x03, 0x04) },
  // By its byte order mark. The little-endian one starts as UTF-16's: it was read as UTF-16, its
  // lines refused for NUL bytes with a guess of "UTF-16 without a byte order mark".
  { name: 'UTF-32 text', at: 0, magic: Buffer.of(0xff, 0xfe, 0x00, 0x00) },
  { name: 'UTF-32 text', at: 0, magic: Buffer.of(0x00, 0x00, 0xfe, 0xff) },
  // Files that land in a corpus folder beside its text. Each was read as lines: a PNG's gave one
  // garbage row (its header's "\x1a") and 253 INVALID_UTF8 records that never said why.
  { name: 'a PNG image', at: 0, magic: Buffer.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a), fix: 'it holds no text; leave it out of the input' },
  { name: 'a JPEG image', at: 0, magic: Buffer.of(0xff, 0xd8, 0xff), fix: 'it holds no text; leave it out of the input' },
  { name: 'a PDF document', at: 0, magic: /^%PDF-\d\.\d/, fix: 'extract its text into the input' },
  // Its first page header follows (a Thrift struct whose first field is an i32: 0x15).
  { name: 'a Parquet file', at: 0, magic: /^PAR1\x15/, fix: 'write its text column out as JSON Lines' },
  { name: 'an Arrow IPC file', at: 0, magic: /^ARROW1\0/, fix: 'write its text column out as JSON Lines' },
  { name: 'an SQLite database', at: 0, magic: /^SQLite format 3\0/, fix: 'export its text as JSON Lines' },
  { name: 'an executable (ELF)', at: 0, magic: Buffer.of(0x7f, 0x45, 0x4c, 0x46), fix: 'it holds no text; leave it out of the input' },
];

/** Bytes to read before deciding: up to the tar magic's end. */
const SNIFF_BYTES = 257 + 6;

type UnsupportedFormat = (typeof UNSUPPORTED_FORMATS)[number];

/** What `head` (an object's first bytes, gunzipped or not) shows it is, if a format embedq does not read. */
function unsupportedFormatOf(head: Buffer): UnsupportedFormat | undefined {
  return UNSUPPORTED_FORMATS.find(({ at, magic }) => {
    const bytes = head.subarray(at, at + 16);
    return Buffer.isBuffer(magic) ? bytes.subarray(0, magic.length).equals(magic) : magic.test(bytes.toString('latin1'));
  });
}

/** An object in a format embedq does not read: one record for it, and none of its bytes as lines. */
class UnsupportedFormatError extends Error {
  constructor({ name, fix }: UnsupportedFormat, gzipped: boolean) {
    if (name === 'gzip-compressed') {
      super('gzipped twice (gzip data inside gzip), not supported: gunzip it once');
      return;
    }
    const what = gzipped ? `gzipped, and inside ${name.endsWith('-compressed') ? name.replace('-compressed', '-compressed data') : name}` : name;
    const defaultFix = name === 'a tar archive' || name === 'a zip archive' ? 'extract its files into the input' : name === 'UTF-32 text' ? 'convert it to UTF-8' : 'decompress it, or gzip it';
    super(`${what}, not supported: ${fix ?? defaultFix}`);
  }
}

/** Gzip by its name: `.gz`, or `.gzip` as some exporters write it (it was gunzipped by its bytes but read as text). */
const GZIP_NAME = /\.(gz|gzip)$/i;

/** The format an object's key implies: `.jsonl`, `.ndjson`, `.json` (after any `.gz` or `.gzip`) are JSON Lines. */
export function formatOf(key: string): CorpusFormat {
  const name = key.toLowerCase().replace(GZIP_NAME, '');
  return /\.(jsonl|ndjson|json)$/.test(name) ? 'jsonl' : 'text';
}

/**
 * With JSON Lines fields asked for (`--id-field`, a `--text-field` other than `text`) over an input
 * without a JSON Lines object: what the run does instead (logged by the split, printed by `plan`).
 * Submit cannot tell without listing the whole input. Undefined when nothing was asked for.
 */
export function plainTextWarning(options: { textField?: string | undefined; idField?: string | undefined }): string | undefined {
  const asked = [options.textField !== undefined && options.textField !== 'text' ? `--text-field ${options.textField}` : undefined, options.idField !== undefined ? `--id-field ${options.idField}` : undefined].filter(Boolean);
  if (asked.length === 0) return undefined;
  return (
    `${asked.join(', ')}: the input has no JSON Lines object (.jsonl, .ndjson, .json), so each line is read as plain text: embedded whole, with no id` +
    `${options.idField !== undefined ? ' (no line is classified and the delta lists no id)' : ''}; give --format jsonl if the files are JSON Lines under other names`
  );
}

/**
 * Streams the lines of one corpus object, reading only as fast as the consumer pulls. Gunzips when
 * the key ends in `.gz` or the bytes start with the gzip magic; reads UTF-8, or UTF-16 that starts
 * with its byte order mark. Lines end as LineSplitter says (at `\n`, or at any line break in an
 * object whose first is a lone `\r`). Text is passed through unchanged (no trimming) apart from the
 * line's trailing `\r` and the object's leading BOM.
 *
 * Failures: a line that cannot be used is an `error` line, and reading goes on. An object that is
 * bzip2, zstd, xz, tar or zip (gzipped or not) is one INVALID_UTF8 line saying so, and nothing else.
 * Truncated gzip data, a bad header or data after the gzip stream is one INVALID_GZIP line at the
 * first line that could not be read, and ends the object (nothing after it can be trusted); the
 * partial line before it is dropped. A gzip member damaged inside (a checksum, a length, an invalid
 * code) after lines were yielded throws CorruptInputError: zlib finds it only after passing on
 * lines that may be corrupt, and the caller cannot take them back. A failing read (network, disk)
 * throws StorageUnavailableError or StorageError; the caller retries the object.
 *
 * Leaving the loop early (`break`, `return()`, an exception) destroys the underlying stream.
 */
export async function* readCorpusLines(object: CorpusObject, options: ReadCorpusLinesOptions = {}): AsyncGenerator<CorpusLine> {
  const { source } = object;
  const format = options.format ?? formatOf(object.key);
  const toLine = format === 'jsonl' ? jsonLineReader(source, options.textField ?? 'text', options.idField) : textLineReader(source);
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  const from = options.from;
  const gzipByName = GZIP_NAME.test(object.key);
  if (from && (object.opened || gzipByName)) throw new Error(`readCorpusLines: ${source} cannot be read from a byte offset`);
  const splitter = new LineSplitter({ maxLineBytes, startOffset: from?.offset });
  let line = from?.line ?? 0;

  const opened = await (object.opened ?? object.store.open(object.key, from ? { from: from.offset } : {}));
  try {
    await options.verify?.(opened.version);
  } catch (error) {
    opened.body.destroy();
    throw error;
  }
  // Mid-object bytes are never a gzip header.
  const bytes = decompressed(opened.body, gzipByName, from === undefined, async () => {
    // For corrupt gzip data: the same version again, from its first byte.
    const again = await object.store.open(object.key);
    if (again.version === opened.version) return again.body;
    again.body.destroy();
    return undefined;
  });
  const text = utf8Bytes(bytes.chunks, from === undefined);
  const lines = function* (split: (Buffer | OversizedLine)[]): Generator<CorpusLine> {
    // Offsets are for ranged reads: of the object's bytes as they are, split at `\n`.
    const offsets = options.offsets === true && !bytes.gunzipped && text.utf16 === undefined && !splitter.anyLineBreak;
    for (let i = 0; i < split.length; i += 1) {
      const next = classify(split[i]!, line++);
      if (offsets) next.offset = splitter.starts[i];
      yield next;
    }
  };
  try {
    for await (const chunk of text.chunks) yield* lines(splitter.push(chunk));
    yield* lines(splitter.end());
  } catch (error) {
    if (error instanceof UnsupportedFormatError) {
      yield errorLine(source, line, 'INVALID_UTF8', error.message);
      return;
    }
    if (isDamagedMember(error) && line > 0) {
      const reason = `corrupt gzip data (${(error as Error).message}) in the member holding line ${line}, found after lines 1–${line} were read`;
      throw new CorruptInputError(`${source}: ${reason}: that member's lines cannot be trusted, and were already queued; fix or replace the file, then submit again with --overwrite (a retry would find the file replaced: INPUT_CHANGED)`, { cause: error });
    }
    if (isZlibError(error) || error instanceof GzipTrailingDataError) {
      const reason = `corrupt gzip data (${(error as Error).message}); the rest of the object was not read`;
      yield errorLine(source, line, 'INVALID_GZIP', reason);
      return;
    }
    if (error instanceof EmbedqError) throw error;
    throw new StorageUnavailableError(`read ${source}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }

  function classify(bytes: Buffer | OversizedLine, index: number): CorpusLine {
    if ('oversizedBytes' in bytes) {
      return errorLine(source, index, 'TEXT_TOO_LONG', `line is ${bytes.oversizedBytes} bytes, more than the ${maxLineBytes} this reader holds; skipped`);
    }
    const decoded = decodeUtf8Strict(bytes);
    if (decoded === undefined) {
      if (text.utf16) return errorLine(source, index, 'INVALID_UTF8', `invalid ${text.utf16.toUpperCase()}: an unpaired surrogate, or an odd byte at the end`);
      const offset = firstInvalidUtf8Offset(bytes);
      const value = bytes[offset]?.toString(16).padStart(2, '0') ?? '??';
      return errorLine(source, index, 'INVALID_UTF8', `invalid UTF-8 at byte offset ${offset} of the line (0x${value})`);
    }
    // UTF-8 text has no NUL bytes (JSON Lines refuse them as invalid JSON): a binary object among
    // the corpus, or UTF-16 without its byte order mark, whose lines would be embedded as garbage.
    const nul = format === 'text' ? bytes.indexOf(0) : -1;
    if (nul !== -1) {
      return errorLine(source, index, 'INVALID_UTF8', `NUL byte at byte offset ${nul} of the line: not UTF-8 text (binary data, or UTF-16 without a byte order mark?)`);
    }
    return toLine(decoded, index);
  }
}

/**
 * The object's bytes, gunzipped if needed, and whether they are (known once the first chunk is
 * out). The gzip decision needs the first two bytes (unless `sniff` is off: a read from mid-object),
 * so they are read first and re-emitted. An empty object yields nothing, even when named `.gz`.
 * `raw` is destroyed however this generator ends; destroying (rather than awaiting its
 * iterator's `return()`) cannot hang on a stalled connection.
 */
function decompressed(raw: Readable, gzipByName: boolean, sniff: boolean, reopen: Reopen): { chunks: AsyncGenerator<Buffer>; gunzipped: boolean } {
  const result = { chunks: decompressedChunks(raw, gzipByName, sniff, reopen, () => (result.gunzipped = true)), gunzipped: gzipByName };
  return result;
}

/**
 * The text's bytes as UTF-8: UTF-16 with a byte order mark is transcoded (`utf16` says so once the
 * first chunk is out). Not looked for when `sniff` is off (a read from mid-object).
 */
function utf8Bytes(input: AsyncGenerator<Buffer>, sniff: boolean): { chunks: AsyncGenerator<Buffer>; utf16: Utf16ByteOrder | undefined } {
  const result: { chunks: AsyncGenerator<Buffer>; utf16: Utf16ByteOrder | undefined } = {
    chunks: sniff ? utf8Chunks(input, (byteOrder) => (result.utf16 = byteOrder)) : input,
    utf16: undefined,
  };
  return result;
}

async function* utf8Chunks(input: AsyncGenerator<Buffer>, transcoding: (byteOrder: Utf16ByteOrder) => void): AsyncGenerator<Buffer> {
  try {
    const { head, all } = await peek(input, 2);
    const byteOrder = utf16ByteOrder(head);
    if (byteOrder === undefined) return yield* all;
    transcoding(byteOrder);
    yield* utf16ToUtf8(withoutFirstBytes(all, 2), byteOrder);
  } finally {
    await input.return(undefined);
  }
}

async function* withoutFirstBytes(chunks: AsyncIterable<Buffer>, count: number): AsyncGenerator<Buffer> {
  let skip = count;
  for await (const chunk of chunks) {
    const kept = chunk.subarray(Math.min(skip, chunk.length));
    skip -= chunk.length - kept.length;
    if (kept.length > 0) yield kept;
  }
}

/**
 * The first `count` bytes of `chunks` (fewer if it ends sooner), read ahead, and all its bytes
 * from the first. The caller ends `chunks` (its `return()`, or destroying its source).
 */
async function peek(chunks: AsyncIterator<Buffer>, count: number): Promise<{ head: Buffer; all: AsyncGenerator<Buffer> }> {
  const read: Buffer[] = [];
  let readBytes = 0;
  // A failure while reading ahead (corrupt gzip) comes after the bytes read before it, as unpeeked.
  let failure: { error: unknown } | undefined;
  try {
    while (readBytes < count) {
      const next = await chunks.next();
      if (next.done) break;
      read.push(next.value);
      readBytes += next.value.length;
    }
  } catch (error) {
    failure = { error };
  }
  const first = read.length === 1 ? read[0]! : Buffer.concat(read);
  async function* all(): AsyncGenerator<Buffer> {
    if (first.length > 0) yield first;
    if (failure) throw failure.error;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
  }
  return { head: first, all: all() };
}

/** The object's bytes again from the start, if it is still the version being read. */
type Reopen = () => Promise<Readable | undefined>;

/** decompressed's bytes; `gunzipping` is called when the magic bytes show gzip. */
async function* decompressedChunks(raw: Readable, gzipByName: boolean, sniff: boolean, reopen: Reopen, gunzipping: () => void): AsyncGenerator<Buffer> {
  try {
    const { head, all } = await peek(raw[Symbol.asyncIterator](), sniff ? SNIFF_BYTES : GZIP_MAGIC.length);
    if (head.length === 0) return;
    const isGzip = gzipByName || (sniff && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]);
    if (!isGzip) {
      const format = sniff ? unsupportedFormatOf(head) : undefined;
      if (format !== undefined) throw new UnsupportedFormatError(format, false);
      return yield* all;
    }
    gunzipping();
    if (!sniff) return yield* gunzipped(all, reopen);
    // A .tar.gz (or a gzipped .zst) is as unreadable once inflated.
    const inflated = gunzipped(all, reopen);
    try {
      const { head: inflatedHead, all: allInflated } = await peek(inflated, SNIFF_BYTES);
      const format = unsupportedFormatOf(inflatedHead);
      if (format !== undefined) throw new UnsupportedFormatError(format, true);
      yield* allInflated;
    } finally {
      await inflated.return(undefined);
    }
  } finally {
    raw.destroy();
  }
}

/** Compressed bytes go to zlib in slices of this size: at most ~8 MiB of output each (deflate's ratio tops out near 1:1032). */
const GZIP_SLICE_BYTES = 8 * 1024;

/**
 * Gunzips, deterministically even for corrupt data. With a piped stream, how much output comes
 * out before a zlib error depends on how the network chunked the input and on timing (a stream
 * destroyed with an error drops what it buffered), so a re-run could salvage a different number of
 * lines. Here the input is cut into fixed slices by offset, each slice is written and awaited,
 * and output is collected by a `data` listener that never pauses. The await per slice is also the
 * backpressure.
 *
 * zlib drops what the write that meets the error had inflated (up to 16 KiB: ~70 lines, a whole
 * member before a bad one, good lines before trailing garbage). So on an error the object is read
 * again (`reopen`), the slice that failed fed byte by byte, and what the first pass lost is
 * delivered before the error, about what `gzip -dc` prints.
 */
async function* gunzipped(input: AsyncIterable<Buffer>, reopen: Reopen): AsyncGenerator<Buffer> {
  const inflater = new SliceInflater();
  let slices = 0;
  let fed = 0;
  try {
    for await (const slice of fixedSlices(input, GZIP_SLICE_BYTES)) {
      fed += slice.length;
      if (inflater.consumed === fed - slice.length) {
        await inflater.write(slice);
        slices += 1;
        yield* inflater.take();
        if (inflater.failure !== undefined) break;
      }
      // zlib stops at zero bytes after a member (padding) and ignores the rest; gzip -d warns
      // when more than zeros follow. Such data was silently not read: now it ends the object
      // with INVALID_GZIP, like other trailing garbage.
      if (inflater.consumed < fed) {
        const unread = slice.subarray(Math.max(0, inflater.consumed - (fed - slice.length)));
        const data = unread.findIndex((byte) => byte !== 0);
        if (data !== -1) {
          inflater.failure = new GzipTrailingDataError(fed - unread.length + data, inflater.consumed);
          break;
        }
      }
    }
    if (inflater.failure === undefined) {
      await inflater.end();
      yield* inflater.take();
    }
  } finally {
    inflater.destroy();
  }
  if (inflater.failure === undefined) return;
  // Nothing was lost to an error: zlib had delivered everything up to the stream's end.
  if (inflater.failure instanceof GzipTrailingDataError) throw inflater.failure;
  // What zlib dropped of a damaged member is as untrustworthy as what it delivered.
  if (isDamagedMember(inflater.failure)) throw inflater.failure;
  // The slice being written when it failed; at the end, the last one (its output is what ended short).
  yield* salvage(reopen, Math.max(0, slices - 1), inflater.delivered);
  throw inflater.failure;
}

/** Data after a gzip stream's end and the zero bytes that padded it (which zlib skips without a word). */
class GzipTrailingDataError extends Error {
  constructor(at: number, streamEnd: number) {
    super(`data at byte ${at}, after the gzip stream ended at byte ${streamEnd} and zero padding`);
  }
}

/** A gunzip fed slice by slice, each write awaited, its output collected as it comes. */
class SliceInflater {
  failure: unknown;
  /** Bytes of output so far. */
  delivered = 0;
  private readonly gunzip = createGunzip();
  private output: Buffer[] = [];

  constructor(private readonly keepFrom = 0) {
    this.gunzip.on('data', (chunk: Buffer) => {
      const skip = Math.max(0, Math.min(chunk.length, this.keepFrom - this.delivered));
      this.delivered += chunk.length;
      if (skip < chunk.length) this.output.push(skip === 0 ? chunk : chunk.subarray(skip));
    });
    this.gunzip.on('error', (error) => {
      this.failure ??= error;
    });
  }

  write(slice: Buffer): Promise<void> {
    return this.settled((done) => this.gunzip.write(slice, () => done()));
  }

  end(): Promise<void> {
    return this.settled((done) => this.gunzip.once('end', done).end());
  }

  /** Bytes of input zlib took: fewer than written once it stopped at zero bytes after a member. */
  get consumed(): number {
    return this.gunzip.bytesWritten;
  }

  take(): Buffer[] {
    const taken = this.output;
    this.output = [];
    return taken;
  }

  destroy(): void {
    this.gunzip.destroy();
  }

  // zlib reports a corrupt input through 'error' and then never calls the pending write's
  // callback, so every wait also ends on 'error' or 'close'.
  private settled(start: (done: () => void) => void): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.gunzip.off('error', done).off('close', done);
        resolve();
      };
      this.gunzip.once('error', done).once('close', done);
      start(done);
    });
  }
}

/**
 * The output a failed pass lost: the object again, the slices before `failedSlice` whole (their
 * output was delivered, and is skipped), then that slice a byte at a time until the error, so at
 * most one byte's output is lost. Nothing when the object cannot be read again as it was.
 */
async function* salvage(reopen: Reopen, failedSlice: number, delivered: number): AsyncGenerator<Buffer> {
  const raw = await reopen().catch(() => undefined);
  if (!raw) return;
  const inflater = new SliceInflater(delivered);
  try {
    let index = 0;
    for await (const slice of fixedSlices(raw, GZIP_SLICE_BYTES)) {
      if (index < failedSlice) await inflater.write(slice);
      else {
        for (let at = 0; at < slice.length && inflater.failure === undefined; at += 1) await inflater.write(slice.subarray(at, at + 1));
        break;
      }
      if (inflater.failure !== undefined) break;
      index += 1;
    }
    if (inflater.failure === undefined) await inflater.end();
    yield* inflater.take();
  } catch {
    // A failing re-read salvages nothing more; the first pass's error stands.
  } finally {
    inflater.destroy();
    raw.destroy();
  }
}

/** Re-cuts a byte stream into slices of exactly `size` bytes (the last may be shorter). */
async function* fixedSlices(input: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of input) {
    let offset = 0;
    while (offset < chunk.length) {
      const count = Math.min(size - pendingBytes, chunk.length - offset);
      pending.push(chunk.subarray(offset, offset + count));
      pendingBytes += count;
      offset += count;
      if (pendingBytes === size) {
        yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
        pending = [];
        pendingBytes = 0;
      }
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

function isZlibError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('Z_') && typeof (error as { errno?: unknown }).errno === 'number';
}

/**
 * A zlib error that shows a member's deflate data or its trailer damaged (a checksum or length
 * mismatch, an invalid code): what the member inflated before it may be garbage. Not a truncation
 * (Z_BUF_ERROR: what came out is what was stored) nor a bad header (nothing inflated from it yet).
 */
function isDamagedMember(error: unknown): boolean {
  return isZlibError(error) && (error as { code: string }).code === 'Z_DATA_ERROR' && !/header|unknown compression method|invalid window size/.test((error as Error).message);
}

function errorLine(source: string, line: number, code: InputLineErrorCode, reason: string): CorpusLine {
  // InputLineError owns the message format (`source:line: reason`, line 1-based for humans).
  return { kind: 'error', source, line, code, message: new InputLineError(code, source, line, reason).message };
}

/** Any non-whitespace character (JavaScript's whitespace: Unicode spaces, tabs, U+3000, U+FEFF...). */
const NON_BLANK = /\S/;

/** A UTF-16 surrogate not part of a pair (with the `u` flag, a pair is one code point, not two). */
const LONE_SURROGATE = /\p{Cs}/u;

function textLineReader(source: string): (text: string, line: number) => CorpusLine {
  return (text, line) => (NON_BLANK.test(text) ? { kind: 'text', source, line, text, id: null } : { kind: 'blank', source, line });
}

function jsonLineReader(source: string, textField: string, idField: string | undefined): (text: string, line: number) => CorpusLine {
  return (raw, line) => {
    if (!NON_BLANK.test(raw)) return { kind: 'blank', source, line };
    let record: unknown;
    try {
      record = JSON.parse(raw);
    } catch (error) {
      return errorLine(source, line, 'INVALID_JSON', `invalid JSON: ${(error as Error).message}`);
    }
    if (!isRecord(record)) {
      return errorLine(source, line, 'MISSING_TEXT_FIELD', `expected a JSON object with a "${textField}" field, found ${kindOf(record)}`);
    }
    // A line refused for its text still names its document, when it has an id.
    const refused = (code: InputLineErrorCode, reason: string): CorpusLine => withId(errorLine(source, line, code, reason), record, raw, idField);
    const text = fieldOf(record, textField);
    if (text === undefined) return refused('MISSING_TEXT_FIELD', `field "${textField}" is missing (the line has ${fieldsOf(record)})`);
    if (typeof text !== 'string') return refused('MISSING_TEXT_FIELD', `field "${textField}" is ${kindOf(text)}, expected a string`);
    // Refused as in a text file: JSON escapes let through what UTF-8 bytes cannot hold (a NUL was
    // embedded, a lone surrogate stored as U+FFFD, both without a record).
    const nul = text.indexOf('\0');
    if (nul !== -1) return refused('INVALID_UTF8', `field "${textField}" holds a NUL character (\\u0000) at character ${nul}: not text (binary data?)`);
    const surrogate = text.search(LONE_SURROGATE);
    if (surrogate !== -1) {
      const escape = `\\u${text.charCodeAt(surrogate).toString(16)}`;
      return refused('INVALID_UTF8', `field "${textField}" holds an unpaired surrogate (${escape}) at character ${surrogate}: not Unicode text, UTF-8 cannot hold it`);
    }
    if (!NON_BLANK.test(text)) return { kind: 'blank', source, line };
    if (idField === undefined) return { kind: 'text', source, line, text, id: null };
    try {
      return { kind: 'text', source, line, text, id: idOf(fieldOf(record, idField), raw, idField) };
    } catch (error) {
      // Such a line fails alone instead of its whole object (it failed the job as a storage error).
      if (error instanceof IdFieldError) return errorLine(source, line, error.code, error.message);
      throw error;
    }
  };
}

/** An `--id-field` value that cannot be an id; the line is refused with `code`. */
class IdFieldError extends Error {
  constructor(
    readonly code: InputLineErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** `error` with the line's id, if `idField` is given and the line has one that can be read. */
function withId(error: CorpusLine, record: Record<string, unknown>, raw: string, idField: string | undefined): CorpusLine {
  if (idField === undefined || error.kind !== 'error') return error;
  try {
    const id = idOf(fieldOf(record, idField), raw, idField);
    return id === null ? error : { ...error, id };
  } catch {
    return error;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `record[field]`, or for a dotted `field` the nested value. A key that itself contains the dots
 * wins (`{"meta.body": …}`), so such keys stay reachable. Only own properties count.
 */
/** A record's top-level field names, for a message: a mistyped --text-field shows beside the right one. */
function fieldsOf(record: Record<string, unknown>): string {
  const names = Object.keys(record);
  if (names.length === 0) return 'no fields';
  const shown = names.slice(0, 8).map((name) => JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name));
  return `${names.length === 1 ? 'field' : 'fields'} ${shown.join(', ')}${names.length > 8 ? `, and ${names.length - 8} more` : ''}`;
}

function fieldOf(record: Record<string, unknown>, field: string): unknown {
  if (Object.hasOwn(record, field)) return record[field];
  let value: unknown = record;
  for (const part of field.split('.')) {
    if (!isRecord(value) || !Object.hasOwn(value, part)) return undefined;
    value = value[part];
  }
  return value;
}

/**
 * Strings as they are; numbers and booleans as JSON writes them; objects as JSON; null or missing
 * → null. A number a double does not hold exactly (an integer past 2^53, most fractions, past
 * 1e308, below 1e-324) is its text in the line: JSON.parse made 9007199254740993 and …992 one id,
 * and 1e400 "null". One it holds exactly is as JSON writes it, whatever its text: 1.50 and 1.5
 * are one id, as 2.0 and 2 are (1.50 was kept as written, another id).
 * Throws IdFieldError for what cannot be an id: a string with an unpaired surrogate (written as
 * U+FFFD, "a\ud800" and "a\udbff" became one id), a line the exact reader cannot read (a
 * duplicate key, very deep nesting), an array or object nested too deeply to write out.
 */
function idOf(value: unknown, raw: string, idField: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') {
    const surrogate = value.search(LONE_SURROGATE);
    if (surrogate === -1) return value;
    const escape = `\\u${value.charCodeAt(surrogate).toString(16)}`;
    throw new IdFieldError('INVALID_UTF8', `field "${idField}" holds an unpaired surrogate (${escape}) at character ${surrogate}: UTF-8 cannot hold it, and two such ids would be stored as one`);
  }
  // A plain integer in the safe range is exact. The screen looks at the whole line (a cheap test,
  // not a parse): any fraction or exponent in it, or an integer past 2^53, and the id's own text is
  // read. Taken as exact from its value alone, 1e-400 became "0" and 1.00000000000000000001 "1".
  if (typeof value === 'number' && !(Number.isSafeInteger(value) && !/\d[.eE]/.test(raw))) {
    let exact: unknown;
    try {
      exact = fieldOf(parseLossless(raw) as Record<string, unknown>, idField);
    } catch (error) {
      // The exact reader refuses what JSON.parse lets pass (a duplicate key): an integer in the
      // safe range is then taken as read, as before the screen.
      if (Number.isSafeInteger(value)) return JSON.stringify(value);
      const reason = error instanceof RangeError ? 'the line is nested too deeply' : (error as Error).message;
      throw new IdFieldError('INVALID_JSON', `field "${idField}" is a number a double cannot hold exactly, and its digits could not be read from the line: ${reason}`);
    }
    if (isLosslessNumber(exact) && !heldExactly(exact.value, value)) return exact.value;
  }
  try {
    return JSON.stringify(value);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new IdFieldError('INVALID_JSON', `field "${idField}" is ${kindOf(value)} nested too deeply to be written as an id`);
  }
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}
