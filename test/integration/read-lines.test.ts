import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, CorruptInputError, InputChangedError, StorageError, StorageUnavailableError } from '../../src/errors.js';
import { listCorpus, assertInputExists, type CorpusObject } from '../../src/corpus/list-corpus.js';
import { formatOf, readCorpusLines, type CorpusLine, type ReadCorpusLinesOptions } from '../../src/corpus/read-lines.js';
import { LocalObjectStore } from '../../src/storage/local-store.js';
import { sleep } from '../../src/sleep.js';
import type { ObjectStore, OpenedObject, StoredObject } from '../../src/storage/object-store.js';
import { createS3Client } from '../../src/storage/s3-client.js';
import { S3ObjectStore } from '../../src/storage/s3-store.js';
import { PACKED, ZIP_STORED } from '../support/compressed-fixtures.js';
import { startRewritingProxy } from '../support/rewriting-proxy.js';
import { startS3rver, type TestS3 } from '../support/s3rver.js';

/** `into`: where the items go as they come, kept when `items` throws. */
async function collect<T>(items: AsyncIterable<T>, into: T[] = []): Promise<T[]> {
  const result = into;
  for await (const item of items) result.push(item);
  return result;
}

/**
 * A store over in-memory bytes that hands them out in chunks of `chunkBytes`, so tests control
 * where chunk boundaries fall, and that keeps every stream it returned for inspection.
 */
class MemoryStore implements ObjectStore {
  readonly description = 'memory';
  readonly streams: Readable[] = [];
  constructor(
    private readonly objects: Record<string, Buffer>,
    private readonly chunkBytes = 64 * 1024,
  ) {}
  async *list(prefix: string): AsyncIterable<StoredObject> {
    for (const key of Object.keys(this.objects).sort()) if (key.startsWith(prefix)) yield { key, sizeBytes: this.objects[key]!.length };
  }
  async stat(key: string): Promise<StoredObject | undefined> {
    const bytes = this.objects[key];
    return bytes ? { key, sizeBytes: bytes.length } : undefined;
  }
  async read(key: string, from = 0): Promise<Readable> {
    const bytes = this.objects[key]?.subarray(from);
    if (!bytes) throw new StorageError(`read memory/${key}: no such object`);
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < bytes.length; offset += this.chunkBytes) chunks.push(bytes.subarray(offset, offset + this.chunkBytes));
    return this.track(Readable.from(chunks, { objectMode: false }));
  }
  async open(key: string, options: { from?: number } = {}): Promise<OpenedObject> {
    return { body: await this.read(key, options.from), version: `${this.objects[key]?.length}` };
  }
  track(stream: Readable): Readable {
    this.streams.push(stream);
    return stream;
  }
  async write(): Promise<void> {
    throw new Error('read-only');
  }
  async writeStream(): Promise<number> {
    throw new Error('read-only');
  }
  async delete(): Promise<void> {
    throw new Error('read-only');
  }
  async abortIncompleteWrites(): Promise<number> {
    return 0;
  }
}

/** Reads `bytes` as the object `key`, once in one chunk and once byte by byte; both must agree. */
async function linesOf(key: string, bytes: Buffer | string, options: ReadCorpusLinesOptions = {}): Promise<CorpusLine[]> {
  const body = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  const results: CorpusLine[][] = [];
  for (const chunkBytes of [1 << 20, 1]) {
    const store = new MemoryStore({ [key]: body }, chunkBytes);
    results.push(await collect(readCorpusLines({ store, key, source: key, sizeBytes: body.length }, options)));
  }
  expect(results[1], 'byte-by-byte chunks give the same lines').toEqual(results[0]);
  return results[0]!;
}

const text = (source: string, line: number, value: string, id: string | null = null): CorpusLine => ({ kind: 'text', source, line, text: value, id });
const blank = (source: string, line: number): CorpusLine => ({ kind: 'blank', source, line });
const failure = (source: string, line: number, code: string, reason: string): CorpusLine =>
  ({ kind: 'error', source, line, code, message: `${source}:${line + 1}: ${reason}` }) as CorpusLine;

describe('readCorpusLines: plain text', () => {
  it('yields one record per line: text as-is, blank and whitespace-only lines as blank', async () => {
    const lines = await linesOf('a.txt', 'alpha\nbeta\n\n   \n\t gamma  \nlast');
    expect(lines).toEqual([text('a.txt', 0, 'alpha'), text('a.txt', 1, 'beta'), blank('a.txt', 2), blank('a.txt', 3), text('a.txt', 4, '\t gamma  '), text('a.txt', 5, 'last')]);
  });

  it('counts a final line without newline; a newline at EOF adds no line; empty object has none', async () => {
    expect(await linesOf('a.txt', 'a\nb\n')).toEqual([text('a.txt', 0, 'a'), text('a.txt', 1, 'b')]);
    expect(await linesOf('a.txt', 'a\nb')).toEqual([text('a.txt', 0, 'a'), text('a.txt', 1, 'b')]);
    expect(await linesOf('a.txt', '\n')).toEqual([blank('a.txt', 0)]);
    expect(await linesOf('a.txt', '\n\n')).toEqual([blank('a.txt', 0), blank('a.txt', 1)]);
    expect(await linesOf('a.txt', '')).toEqual([]);
  });

  it('strips one trailing \\r (CRLF files), and only one', async () => {
    expect(await linesOf('crlf.txt', 'one\r\ntwo\r\n\r\nthree\r\nx\r\r\n\rlead')).toEqual([
      text('crlf.txt', 0, 'one'),
      text('crlf.txt', 1, 'two'),
      blank('crlf.txt', 2),
      text('crlf.txt', 3, 'three'),
      text('crlf.txt', 4, 'x\r'),
      text('crlf.txt', 5, '\rlead'),
    ]);
  });

  it('drops a UTF-8 BOM at the start of the object only', async () => {
    expect(await linesOf('bom.txt', '\uFEFFfirst\nsecond\n\uFEFFthird')).toEqual([
      text('bom.txt', 0, 'first'),
      text('bom.txt', 1, 'second'),
      text('bom.txt', 2, '\uFEFFthird'),
    ]);
    expect(await linesOf('bom.txt', '\uFEFF')).toEqual([]);
    expect(await linesOf('bom.txt', '\uFEFF\n')).toEqual([blank('bom.txt', 0)]);
    expect(await linesOf('bom.txt', '\uFEFF\r\nx')).toEqual([blank('bom.txt', 0), text('bom.txt', 1, 'x')]);
  });

  it('keeps Chinese text intact across chunk boundaries; U+3000 alone is blank', async () => {
    expect(await linesOf('zh.txt', '你好，世界\n嵌入向量与检索\n\u3000\n阿里云百炼 😀\n')).toEqual([
      text('zh.txt', 0, '你好，世界'),
      text('zh.txt', 1, '嵌入向量与检索'),
      blank('zh.txt', 2),
      text('zh.txt', 3, '阿里云百炼 😀'),
    ]);
  });

  it('reports invalid UTF-8 per line; every other line survives with its number', async () => {
    const bytes = Buffer.concat([
      Buffer.from('ok 0\n'),
      Buffer.from([0x61, 0x62, 0xff, 0x63, 0x0a]), // 0xff never appears in UTF-8
      Buffer.from('ok 2\n'),
      Buffer.from([0xe4, 0xb8, 0x20, 0x78, 0x0a]), // '中' cut short
      Buffer.from([0x78, 0xc0, 0x80, 0x0a]), // overlong NUL
      Buffer.from([0xed, 0xa0, 0x80, 0x0a]), // a UTF-16 surrogate
      Buffer.from('中文 ok 6\n'),
      Buffer.from([0x6f, 0x6b, 0xe4, 0xb8]), // truncated at EOF, no newline
    ]);
    expect(await linesOf('corpus/a.txt', bytes)).toEqual([
      text('corpus/a.txt', 0, 'ok 0'),
      failure('corpus/a.txt', 1, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 2 of the line (0xff)'),
      text('corpus/a.txt', 2, 'ok 2'),
      failure('corpus/a.txt', 3, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 0 of the line (0xe4)'),
      failure('corpus/a.txt', 4, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 1 of the line (0xc0)'),
      failure('corpus/a.txt', 5, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 0 of the line (0xed)'),
      text('corpus/a.txt', 6, '中文 ok 6'),
      failure('corpus/a.txt', 7, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 2 of the line (0xe4)'),
    ]);
  });

  it('turns a line longer than maxLineBytes into one TEXT_TOO_LONG record without keeping it', async () => {
    const long = 'x'.repeat(100);
    expect(await linesOf('long.txt', `short\n${long}\nafter\n${long}`, { maxLineBytes: 64 })).toEqual([
      text('long.txt', 0, 'short'),
      failure('long.txt', 1, 'TEXT_TOO_LONG', 'line is 100 bytes, more than the 64 this reader holds; skipped'),
      text('long.txt', 2, 'after'),
      failure('long.txt', 3, 'TEXT_TOO_LONG', 'line is 100 bytes, more than the 64 this reader holds; skipped'),
    ]);
  });
});

describe('readCorpusLines: line breaks other than \\n, and text that is not UTF-8', () => {
  it('splits an object whose first line break is a lone \\r at every \\r, \\n and \\r\\n (it was one line)', async () => {
    expect(await linesOf('mac.txt', 'one\rtwo\r\rthree\r')).toEqual([text('mac.txt', 0, 'one'), text('mac.txt', 1, 'two'), blank('mac.txt', 2), text('mac.txt', 3, 'three')]);
    // Once lone-\r breaks are seen, a later \r\n is one break and a \n is one too.
    expect(await linesOf('mixed.txt', 'a\rb\r\nc\nd\r\r\ne')).toEqual([
      text('mixed.txt', 0, 'a'),
      text('mixed.txt', 1, 'b'),
      text('mixed.txt', 2, 'c'),
      text('mixed.txt', 3, 'd'),
      blank('mixed.txt', 4),
      text('mixed.txt', 5, 'e'),
    ]);
    expect(await linesOf('bom.txt', '\uFEFFx\ry')).toEqual([text('bom.txt', 0, 'x'), text('bom.txt', 1, 'y')]);
    expect(await linesOf('bom.txt', '\uFEFF\r')).toEqual([blank('bom.txt', 0)]);
    expect(await linesOf('one.txt', 'only\r')).toEqual([text('one.txt', 0, 'only')]);
    const jsonl = await linesOf('mac.jsonl', '{"text":"a"}\r{"text":"b"}\r');
    expect(jsonl).toEqual([text('mac.jsonl', 0, 'a'), text('mac.jsonl', 1, 'b')]);
  });

  it('keeps a \\r inside a line of a \\n file as text, as before (the first line break decides)', async () => {
    expect(await linesOf('lf.txt', 'a\nb\rc\r\nd')).toEqual([text('lf.txt', 0, 'a'), text('lf.txt', 1, 'b\rc'), text('lf.txt', 2, 'd')]);
  });

  it('gives no offsets in an object split at lone \\r (a read from an offset splits at \\n only)', async () => {
    expect((await linesOf('mac.txt', 'a\rb\rc', { offsets: true })).map((line) => line.offset)).toEqual([undefined, undefined, undefined]);
    expect((await linesOf('lf.txt', 'a\nb\nc', { offsets: true })).map((line) => line.offset)).toEqual([0, 2, 4]);
  });

  const utf16le = (value: string): Buffer => Buffer.concat([Buffer.of(0xff, 0xfe), Buffer.from(value, 'utf16le')]);
  const utf16be = (value: string): Buffer => Buffer.concat([Buffer.of(0xfe, 0xff), Buffer.from(value, 'utf16le').swap16()]);
  const windowsText = 'héllo wörld\r\n中文 😀 pair\r\n\r\nlast';
  const windowsLines = [text('w.txt', 0, 'héllo wörld'), text('w.txt', 1, '中文 😀 pair'), blank('w.txt', 2), text('w.txt', 3, 'last')];

  it('reads UTF-16 with a byte order mark, either byte order, gzipped too, with no offsets', async () => {
    expect(await linesOf('w.txt', utf16le(windowsText), { offsets: true })).toEqual(windowsLines);
    expect(await linesOf('w.txt', utf16be(windowsText))).toEqual(windowsLines);
    expect(await linesOf('w.txt', gzipSync(utf16le(windowsText)))).toEqual(windowsLines);
    const jsonl = utf16le('{"text":"一","id":7}\r\n{"text":"二","id":8}\r\n');
    expect(await linesOf('w.jsonl', jsonl, { idField: 'id' })).toEqual([text('w.jsonl', 0, '一', '7'), text('w.jsonl', 1, '二', '8')]);
    expect(await linesOf('w.txt', Buffer.of(0xff, 0xfe))).toEqual([]);
  });

  it('refuses only the lines of UTF-16 that is not well formed (a lone surrogate, an odd last byte)', async () => {
    const loneHigh = Buffer.from('ok\n', 'utf16le');
    const bad = Buffer.concat([Buffer.of(0xff, 0xfe), loneHigh, Buffer.of(0x3d, 0xd8, 0x41, 0x00, 0x0a, 0x00), Buffer.from('fine\nodd', 'utf16le'), Buffer.of(0x41)]);
    const reason = 'invalid UTF-16LE: an unpaired surrogate, or an odd byte at the end';
    expect(await linesOf('bad.txt', bad)).toEqual([text('bad.txt', 0, 'ok'), failure('bad.txt', 1, 'INVALID_UTF8', reason), text('bad.txt', 2, 'fine'), failure('bad.txt', 3, 'INVALID_UTF8', reason)]);
  });

  it('refuses text lines holding NUL bytes (UTF-16 without a mark, binary data); other lines go on', async () => {
    const reason = (offset: number): string => `NUL byte at byte offset ${offset} of the line: not UTF-8 text (binary data, or UTF-16 without a byte order mark?)`;
    const bytes = Buffer.concat([Buffer.from('fine\n'), Buffer.from('ab\n', 'utf16le'), Buffer.from('\nafter\n')]);
    expect(await linesOf('nul.txt', bytes)).toEqual([
      text('nul.txt', 0, 'fine'),
      failure('nul.txt', 1, 'INVALID_UTF8', reason(1)),
      failure('nul.txt', 2, 'INVALID_UTF8', reason(0)),
      text('nul.txt', 3, 'after'),
    ]);
    // JSON Lines refuse a raw NUL as invalid JSON, and an escaped one as a text file refuses it (it was embedded).
    const [raw, escaped] = await linesOf('nul.jsonl', '{"text":"a\u0000b"}\n{"text":"a\\u0000b"}\n');
    expect(raw).toMatchObject({ kind: 'error', code: 'INVALID_JSON' });
    expect(escaped).toMatchObject({ kind: 'error', code: 'INVALID_UTF8', line: 1 });
  });
});

describe('readCorpusLines: byte offsets, and reading from one', () => {
  // A BOM, CRLF, multi-byte text, blanks, invalid UTF-8, an oversized line, no final newline.
  const body = Buffer.concat([
    Buffer.from('\ufeffbom line\r\n中文 two\n\n   \n'),
    Buffer.from([0x62, 0x61, 0x64, 0xff, 0x0a]),
    Buffer.from(`${'x'.repeat(100)}\nafter é\r\nlast`),
  ]);
  const starts = [0, ...[...body.entries()].filter(([, byte]) => byte === 0x0a).map(([index]) => index + 1)];

  it('gives each line the offset of its first byte, and a read from any line gives the rest exactly', async () => {
    const whole = await linesOf('m.txt', body, { offsets: true, maxLineBytes: 64 });
    expect(whole.map((line) => line.offset)).toEqual(starts);
    expect(whole).toHaveLength(8);
    for (const line of whole) {
      const rest = await linesOf('m.txt', body, { offsets: true, maxLineBytes: 64, from: { offset: line.offset!, line: line.line } });
      expect(rest, `from line ${line.line}`).toEqual(whole.slice(line.line));
    }
    // Mid-object, three bytes that look like a BOM are text: only the object's start has one.
    const bomLater = Buffer.from('one\n\ufeffbom\n');
    expect(await linesOf('b.txt', bomLater, { from: { offset: 4, line: 1 } })).toEqual([text('b.txt', 1, '\ufeffbom')]);
  });

  it('gives no offsets in a gzipped object (by name or by its bytes), and will not read one from an offset', async () => {
    const gzipped = gzipSync('a\nb\n');
    for (const key of ['g.txt.gz', 'g.txt']) expect((await linesOf(key, gzipped, { offsets: true })).map((line) => line.offset)).toEqual([undefined, undefined]);
    await expect(linesOf('g.txt.gz', gzipped, { from: { offset: 2, line: 1 } })).rejects.toThrow(/cannot be read from a byte offset/);
  });
});

describe('readCorpusLines: gzip', () => {
  const content = 'first\nsecond\n\n第四\n';
  const expected = (source: string): CorpusLine[] => [text(source, 0, 'first'), text(source, 1, 'second'), blank(source, 2), text(source, 3, '第四')];

  it('gunzips by extension', async () => {
    expect(await linesOf('a.txt.gz', gzipSync(content))).toEqual(expected('a.txt.gz'));
  });

  it('gunzips by magic bytes when the name does not say so', async () => {
    expect(await linesOf('a.txt', gzipSync(content))).toEqual(expected('a.txt'));
  });

  it('reads concatenated gzip members as one stream', async () => {
    expect(await linesOf('m.txt.gz', Buffer.concat([gzipSync('first\nsec'), gzipSync('ond\n\n第四\n')]))).toEqual(expected('m.txt.gz'));
  });

  it('chooses JSON Lines by the extension under .gz', async () => {
    expect(await linesOf('d.jsonl.gz', gzipSync('{"text":"hi","id":1}\n'), { idField: 'id' })).toEqual([text('d.jsonl.gz', 0, 'hi', '1')]);
  });

  it('a truncated gzip: the lines before it, then one INVALID_GZIP record', async () => {
    const whole = gzipSync('a\nb\nc\n');
    expect(await linesOf('t.txt.gz', whole.subarray(0, whole.length - 4))).toEqual([
      text('t.txt.gz', 0, 'a'),
      text('t.txt.gz', 1, 'b'),
      text('t.txt.gz', 2, 'c'),
      failure('t.txt.gz', 3, 'INVALID_GZIP', 'corrupt gzip data (unexpected end of file); the rest of the object was not read'),
    ]);
  });

  it('loses no line decoded before the damage: a good member before a truncated one, good lines before trailing garbage', async () => {
    // `cat good.gz bad.gz`, the second member cut short: zlib dropped the first member's lines with it.
    const bad = gzipSync('bad member line\n');
    const members = await linesOf('m.txt.gz', Buffer.concat([gzipSync('good one\ngood two\n'), bad.subarray(0, bad.length - 4)]));
    expect(members.slice(0, 3)).toEqual([text('m.txt.gz', 0, 'good one'), text('m.txt.gz', 1, 'good two'), text('m.txt.gz', 2, 'bad member line')]);
    expect(members.at(-1)).toMatchObject({ kind: 'error', code: 'INVALID_GZIP' });
    // 1,800 lines, then garbage a broken uploader appended: every line, then the record (74 were lost).
    const lines = Array.from({ length: 1_800 }, (_, index) => `line ${index} of the object, with some words`);
    const garbage = await linesOf('g.txt.gz', Buffer.concat([gzipSync(`${lines.join('\n')}\n`), Buffer.from('GARBAGE appended by a broken uploader\n')]));
    expect(garbage.slice(0, 1_800)).toEqual(lines.map((value, index) => text('g.txt.gz', index, value)));
    expect(garbage.slice(1_800)).toEqual([expect.objectContaining({ kind: 'error', code: 'INVALID_GZIP', line: 1_800 })]);
  });

  it('ignores zero padding after the gzip stream, but says so when data follows it (it was dropped without a word)', async () => {
    const first = gzipSync('a\nb\n');
    const padded = await linesOf('p.txt.gz', Buffer.concat([first, Buffer.alloc(512), gzipSync('c\nd\n')]));
    const reason = `corrupt gzip data (data at byte ${first.length + 512}, after the gzip stream ended at byte ${first.length} and zero padding); the rest of the object was not read`;
    expect(padded).toEqual([text('p.txt.gz', 0, 'a'), text('p.txt.gz', 1, 'b'), failure('p.txt.gz', 2, 'INVALID_GZIP', reason)]);
    expect(await linesOf('z.txt.gz', Buffer.concat([first, Buffer.alloc(20_000)]))).toEqual([text('z.txt.gz', 0, 'a'), text('z.txt.gz', 1, 'b')]);
    // The stream ends in a later 8 KiB slice than the first, the padding spans slices, the data is in another.
    const lines = Array.from({ length: 3_000 }, (_, index) => `line ${index} ${(index * 7919) % 10007}`);
    const big = gzipSync(`${lines.join('\n')}\n`);
    const result = await linesOf('b.txt.gz', Buffer.concat([big, Buffer.alloc(10_000), Buffer.of(1)]));
    expect(big.length).toBeGreaterThan(8 * 1024);
    expect(result.slice(0, 3_000)).toEqual(lines.map((value, index) => text('b.txt.gz', index, value)));
    expect(result.slice(3_000)).toEqual([expect.objectContaining({ code: 'INVALID_GZIP', message: expect.stringContaining(`data at byte ${big.length + 10_000}, after the gzip stream ended at byte ${big.length}`) })]);
  });

  it('a .gz name over plain bytes is INVALID_GZIP; an empty .gz object has no lines', async () => {
    expect(await linesOf('p.txt.gz', 'hello\n')).toEqual([
      failure('p.txt.gz', 0, 'INVALID_GZIP', 'corrupt gzip data (incorrect header check); the rest of the object was not read'),
    ]);
    expect(await linesOf('e.txt.gz', '')).toEqual([]);
  });

  it('damage inside a member, found after its lines were passed on, throws CorruptInputError naming the object and lines (976 corrupt rows were embedded)', async () => {
    // The defect hunt's repro: 4,000 random lines, two bytes flipped mid-stream; zlib inflates garbage
    // and finds it only at the member's checksum (or at an invalid code), after the lines went out.
    let seed = 7;
    const letter = (): string => String.fromCharCode(97 + ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % 26));
    const lines = Array.from({ length: 4_000 }, (_, index) => `${index}${Array.from({ length: 60 }, letter).join('')}`);
    const damaged = Buffer.from(gzipSync(`${lines.join('\n')}\n`));
    damaged[Math.floor(damaged.length / 2)]! ^= 0x01;
    damaged[Math.floor(damaged.length / 2) + 1]! ^= 0x01;
    for (const chunkBytes of [1 << 20, 1_000]) {
      const store = new MemoryStore({ 'u.txt.gz': damaged }, chunkBytes);
      const read: CorpusLine[] = [];
      const failed = await collect(readCorpusLines({ store, key: 'u.txt.gz', source: 'u.txt.gz', sizeBytes: damaged.length }, {}), read).catch((error: unknown) => error);
      expect(failed).toBeInstanceOf(CorruptInputError);
      expect((failed as CorruptInputError).code).toBe('INVALID_GZIP');
      expect((failed as Error).message).toMatch(new RegExp(`^u\\.txt\\.gz: corrupt gzip data \\(.+\\) in the member holding line ${read.length}, found after lines 1–${read.length} were read: that member's lines cannot be trusted`));
      expect(read.length).toBeGreaterThan(0);
    }
    // A member damaged before any of its lines was passed on is one record, as before.
    const crc = Buffer.from(gzipSync('one line\n'));
    crc[crc.length - 8]! ^= 1;
    expect(await linesOf('c.txt.gz', crc)).toEqual([failure('c.txt.gz', 0, 'INVALID_GZIP', 'corrupt gzip data (incorrect data check); the rest of the object was not read')]);
  });
});

describe('readCorpusLines: compressions and archives it does not read', () => {
  // Made by the real tools (bzip2, xz, zstd: test/support/compressed-fixtures.ts; tar of two files here), as a user's corpus would be.
  const tarOfTwo = async (): Promise<Buffer> => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-tar-'));
    await writeFile(path.join(folder, 'one.txt'), 'first file\n');
    await writeFile(path.join(folder, 'two.txt'), 'second file\n');
    const tar = execFileSync('tar', ['-cf', '-', '-C', folder, 'one.txt', 'two.txt']);
    await rm(folder, { recursive: true });
    return tar;
  };

  const utf32 = (text: string, order: 'le' | 'be'): Buffer => {
    const bytes = Buffer.alloc(text.length * 4);
    [...text].forEach((char, index) => (order === 'le' ? bytes.writeUInt32LE(char.codePointAt(0)!, index * 4) : bytes.writeUInt32BE(char.codePointAt(0)!, index * 4)));
    return bytes;
  };

  it('refuses bzip2, zstd, xz, tar and zip objects, gzipped or not, gzip inside gzip and UTF-32, with one record saying so and no rows (garbage rows were embedded)', async () => {
    const tar = await tarOfTwo();
    const cases: [string, Buffer, string][] = [
      ['c.txt.bz2', PACKED.bzip2, 'bzip2-compressed, not supported: decompress it, or gzip it'],
      ['c.txt.zst', PACKED.zstd, 'zstd-compressed, not supported: decompress it, or gzip it'],
      ['c.txt.xz', PACKED.xz, 'xz-compressed, not supported: decompress it, or gzip it'],
      ['c.tar', tar, 'a tar archive, not supported: extract its files into the input'],
      ['c.tar.gz', gzipSync(tar), 'gzipped, and inside a tar archive, not supported: extract its files into the input'],
      ['c.txt', gzipSync(tar), 'gzipped, and inside a tar archive, not supported: extract its files into the input'],
      ['c.zip', ZIP_STORED, 'a zip archive, not supported: extract its files into the input'],
      ['c.zst.gz', gzipSync(PACKED.zstd), 'gzipped, and inside zstd-compressed data, not supported: decompress it, or gzip it'],
      // gzip run twice: 13 garbage rows of 3,872 were embedded, the rest INVALID_UTF8 records that did not say why.
      ['c.txt.gz', gzipSync(gzipSync('one\ntwo\n')), 'gzipped twice (gzip data inside gzip), not supported: gunzip it once'],
      ['c.jsonl', gzipSync(gzipSync('{"text":"one"}\n')), 'gzipped twice (gzip data inside gzip), not supported: gunzip it once'],
      // Its little-endian mark starts as UTF-16's: read as UTF-16, refused line by line as "UTF-16 without a byte order mark?".
      ['u.txt', utf32('\uFEFFone\ntwo\n', 'le'), 'UTF-32 text, not supported: convert it to UTF-8'],
      ['u.txt', utf32('\uFEFFone\ntwo\n', 'be'), 'UTF-32 text, not supported: convert it to UTF-8'],
      ['u.txt.gz', gzipSync(utf32('\uFEFFone\n', 'le')), 'gzipped, and inside UTF-32 text, not supported: convert it to UTF-8'],
    ];
    for (const [key, bytes, reason] of cases) expect(await linesOf(key, bytes), key).toEqual([failure(key, 0, 'INVALID_UTF8', reason)]);
  });

  it('refuses images, PDFs, Parquet, Arrow, SQLite and executables met among the text, with one record each (a PNG gave a garbage row and 253 records that never said why)', async () => {
    const png = Buffer.concat([Buffer.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a), Buffer.from('\0\0\0\rIHDR\0\0\0\x10\nrest\n', 'latin1')]);
    const cases: [string, Buffer, string][] = [
      ['a.png', png, 'a PNG image, not supported: it holds no text; leave it out of the input'],
      ['a.txt.gz', gzipSync(png), 'gzipped, and inside a PNG image, not supported: it holds no text; leave it out of the input'],
      ['b.jpg', Buffer.concat([Buffer.of(0xff, 0xd8, 0xff, 0xe0), Buffer.from('\0\x10JFIF\n')]), 'a JPEG image, not supported: it holds no text; leave it out of the input'],
      ['c.pdf', Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n', 'latin1'), 'a PDF document, not supported: extract its text into the input'],
      ['d.parquet', Buffer.from('PAR1\x15\x04\x15\x10\n', 'latin1'), 'a Parquet file, not supported: write its text column out as JSON Lines'],
      ['e.arrow', Buffer.from('ARROW1\0\0\xff\xff\xff\xff\n', 'latin1'), 'an Arrow IPC file, not supported: write its text column out as JSON Lines'],
      ['f.db', Buffer.from('SQLite format 3\0\x10\0\n', 'latin1'), 'an SQLite database, not supported: export its text as JSON Lines'],
      ['g', Buffer.from('\x7fELF\x02\x01\x01\0\n', 'latin1'), 'an executable (ELF), not supported: it holds no text; leave it out of the input'],
    ];
    for (const [key, bytes, reason] of cases) expect(await linesOf(key, bytes), key).toEqual([failure(key, 0, 'INVALID_UTF8', reason)]);
  });

  it('still reads text that merely starts like one ("BZh" at the start of a line, a short file, a line about PDFs or Parquet)', async () => {
    expect(await linesOf('b.txt', 'BZh9 is not bzip2\nab\n')).toEqual([text('b.txt', 0, 'BZh9 is not bzip2'), text('b.txt', 1, 'ab')]);
    expect(await linesOf('p.txt', '%PDF is a format\n')).toEqual([text('p.txt', 0, '%PDF is a format')]);
    expect(await linesOf('q.txt', 'PAR1 is where a Parquet file starts\n')).toEqual([text('q.txt', 0, 'PAR1 is where a Parquet file starts')]);
  });
});

describe('readCorpusLines: JSON Lines', () => {
  const jsonError = (raw: string): string => {
    try {
      JSON.parse(raw);
    } catch (error) {
      return `invalid JSON: ${(error as Error).message}`;
    }
    throw new Error('expected invalid JSON');
  };

  it('reads the text and id fields, and reports each kind of bad line', async () => {
    const rows = [
      '{"text":"hello","id":"a1"}',
      '{"text":"number id","id":42}',
      '',
      '{"text":"   ","id":"blank"}',
      '{"text":5}',
      '{"body":"no text field"}',
      '[1,2]',
      '{"text": "broken"',
      '{"text":"no id"}',
      '{"text":"null id","id":null}',
      '{"text":"  keep spaces  ","id":"x"}',
      '"just a string"',
      '{"text":null}',
      '{"text":"bool id","id":true}',
      '  \t ',
    ];
    const source = 'data/docs.jsonl';
    expect(await linesOf(source, `${rows.join('\n')}\n`, { textField: 'text', idField: 'id' })).toEqual([
      text(source, 0, 'hello', 'a1'),
      text(source, 1, 'number id', '42'),
      blank(source, 2),
      blank(source, 3),
      failure(source, 4, 'MISSING_TEXT_FIELD', 'field "text" is a number, expected a string'),
      failure(source, 5, 'MISSING_TEXT_FIELD', 'field "text" is missing (the line has field "body")'),
      failure(source, 6, 'MISSING_TEXT_FIELD', 'expected a JSON object with a "text" field, found an array'),
      failure(source, 7, 'INVALID_JSON', jsonError('{"text": "broken"')),
      text(source, 8, 'no id', null),
      text(source, 9, 'null id', null),
      text(source, 10, '  keep spaces  ', 'x'),
      failure(source, 11, 'MISSING_TEXT_FIELD', 'expected a JSON object with a "text" field, found a string'),
      failure(source, 12, 'MISSING_TEXT_FIELD', 'field "text" is null, expected a string'),
      text(source, 13, 'bool id', 'true'),
      blank(source, 14),
    ]);
  });

  it('names the id of a line refused for its text, when it has one (the record named only the line)', async () => {
    const lines = ['{"doc_id":"d1","body":"no text"}', '{"doc_id":7,"text":null}', '{"doc_id":"d3","text":"a\\u0000b"}', '{"text":[1]}', '[1]'].join('\n');
    const withId = (record: CorpusLine, id: string): CorpusLine => ({ ...record, id }) as CorpusLine;
    expect(await linesOf('r.jsonl', `${lines}\n`, { idField: 'doc_id' })).toEqual([
      withId(failure('r.jsonl', 0, 'MISSING_TEXT_FIELD', 'field "text" is missing (the line has fields "doc_id", "body")'), 'd1'),
      withId(failure('r.jsonl', 1, 'MISSING_TEXT_FIELD', 'field "text" is null, expected a string'), '7'),
      withId(failure('r.jsonl', 2, 'INVALID_UTF8', 'field "text" holds a NUL character (\\u0000) at character 1: not text (binary data?)'), 'd3'),
      failure('r.jsonl', 3, 'MISSING_TEXT_FIELD', 'field "text" is an array, expected a string'),
      failure('r.jsonl', 4, 'MISSING_TEXT_FIELD', 'expected a JSON object with a "text" field, found an array'),
    ]);
  });

  it('refuses a text field holding a NUL or an unpaired surrogate, as a text file refuses them (embedded with a NUL, stored as U+FFFD)', async () => {
    const lines = ['{"text":"a\\u0000b"}', '{"text":"x\\ud800y"}', '{"text":"\\udc00"}', '{"text":"pair \\ud83d\\ude00 ok"}'].join('\n');
    expect(await linesOf('s.jsonl', `${lines}\n`)).toEqual([
      failure('s.jsonl', 0, 'INVALID_UTF8', 'field "text" holds a NUL character (\\u0000) at character 1: not text (binary data?)'),
      failure('s.jsonl', 1, 'INVALID_UTF8', 'field "text" holds an unpaired surrogate (\\ud800) at character 1: not Unicode text, UTF-8 cannot hold it'),
      failure('s.jsonl', 2, 'INVALID_UTF8', 'field "text" holds an unpaired surrogate (\\udc00) at character 0: not Unicode text, UTF-8 cannot hold it'),
      text('s.jsonl', 3, 'pair 😀 ok'),
    ]);
  });

  it('follows dotted paths for text and id; a key containing the dots wins', async () => {
    const rows = [
      '{"meta":{"body":"deep text","id":7}}',
      '{"meta.body":"literal key","meta":{"body":"not this","id":"m2"}}',
      '{"meta":"a string"}',
      '{"meta":{"body":["a"]}}',
      '{"meta":{"body":"no id"}}',
    ];
    expect(await linesOf('n.ndjson', rows.join('\n'), { textField: 'meta.body', idField: 'meta.id' })).toEqual([
      text('n.ndjson', 0, 'deep text', '7'),
      text('n.ndjson', 1, 'literal key', 'm2'),
      failure('n.ndjson', 2, 'MISSING_TEXT_FIELD', 'field "meta.body" is missing (the line has field "meta")'),
      failure('n.ndjson', 3, 'MISSING_TEXT_FIELD', 'field "meta.body" is an array, expected a string'),
      text('n.ndjson', 4, 'no id', null),
    ]);
  });

  it('never makes two numeric ids one: a number a double only rounds to keeps its text (1e-400 was "0", 1.00000000000000000001 "1"); one it holds exactly is as JSON writes it', async () => {
    const written = ['1e-400', '2e-400', '0', '-0', '-1e-400', '1.00000000000000000001', '1', '1.50', '1.5', '2.0', '2e0', '1e21', '1000000000000000000000', '0.1', '0.10'];
    // A line with no fraction or exponent anywhere is read once; these have one in the text.
    const rows = written.map((id) => `{"id":${id},"text":"v1.2 release"}`);
    const ids = (await linesOf('n.jsonl', rows.join('\n'), { idField: 'id' })).map((line) => (line.kind === 'text' ? line.id : line.kind));
    expect(ids).toEqual(['1e-400', '2e-400', '0', '0', '-1e-400', '1.00000000000000000001', '1', '1.5', '1.5', '2', '2', '1e+21', '1e+21', '0.1', '0.10']);
    // The same ids in lines without any other number: the screen does not change them.
    const plain = (await linesOf('p.jsonl', written.map((id) => `{"id":${id},"text":"plain"}`).join('\n'), { idField: 'id' })).map((line) => (line.kind === 'text' ? line.id : line.kind));
    expect(plain).toEqual(ids);
    // A duplicate key the exact reader refuses: an integer in the safe range is taken as read.
    const duplicate = await linesOf('d.jsonl', '{"id":7,"text":"v1.2","text":"v1.3"}', { idField: 'id' });
    expect(duplicate).toEqual([text('d.jsonl', 0, 'v1.3', '7')]);
  });

  it('keeps a numeric id a double cannot hold as written: two ids past 2^53 stay two, 1e400 is not "null"', async () => {
    const rows = [
      '{"id":9007199254740993,"text":"a"}',
      '{"id":9007199254740992,"text":"b"}',
      '{"id":1e400,"text":"c"}',
      '{"meta":{"id":12345678901234567890},"id":0.1,"text":"d"}',
      '{"id":42,"text":"e"}',
      '{"id":true,"text":"f"}',
    ];
    const ids = (await linesOf('i.jsonl', rows.join('\n'), { idField: 'id' })).map((line) => (line.kind === 'text' ? line.id : line.kind));
    expect(ids).toEqual(['9007199254740993', '9007199254740992', '1e400', '0.1', '42', 'true']);
    const nested = await linesOf('i.jsonl', rows[3]!, { idField: 'meta.id' });
    expect(nested).toEqual([text('i.jsonl', 0, 'd', '12345678901234567890')]);
  });

  it('a line whose inexact numeric id the exact reader refuses (a duplicate key, deep nesting) fails alone', async () => {
    const deep = `{"text":"deep","id":0.5,"a":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const rows = ['{"text":"good 1","id":"g1"}', '{"text":"dup","id":0.1,"id":0.2}', deep, '{"text":"good 2","id":0.25}'];
    // JSON.parse takes all four; before, the exact reader's exception failed the whole object as a storage error.
    expect(await linesOf('d.jsonl', rows.join('\n'), { idField: 'id' })).toEqual([
      text('d.jsonl', 0, 'good 1', 'g1'),
      failure('d.jsonl', 1, 'INVALID_JSON', `field "id" is a number a double cannot hold exactly, and its digits could not be read from the line: Duplicate key 'id' encountered at position 24`),
      failure('d.jsonl', 2, 'INVALID_JSON', 'field "id" is a number a double cannot hold exactly, and its digits could not be read from the line: the line is nested too deeply'),
      text('d.jsonl', 3, 'good 2', '0.25'),
    ]);
    // Without an id field the exact reader is not needed, and every line is read.
    expect((await linesOf('d.jsonl', rows.join('\n'))).map((line) => line.kind)).toEqual(['text', 'text', 'text', 'text']);
  });

  it('refuses an id that cannot be one: an unpaired surrogate (two such ids became one, U+FFFD), an array nested too deeply to write (said "a number")', async () => {
    const deepArray = `{"text":"deep","id":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const rows = ['{"text":"one","id":"a\\ud800"}', '{"text":"two","id":"a\\udbff"}', '{"text":"pair","id":"a\\ud83d\\ude00"}', '{"text":"obj","id":{"k":"a\\ud800"}}', deepArray];
    expect(await linesOf('s.jsonl', rows.join('\n'), { idField: 'id' })).toEqual([
      failure('s.jsonl', 0, 'INVALID_UTF8', 'field "id" holds an unpaired surrogate (\\ud800) at character 1: UTF-8 cannot hold it, and two such ids would be stored as one'),
      failure('s.jsonl', 1, 'INVALID_UTF8', 'field "id" holds an unpaired surrogate (\\udbff) at character 1: UTF-8 cannot hold it, and two such ids would be stored as one'),
      text('s.jsonl', 2, 'pair', 'a\u{1F600}'),
      // JSON.stringify writes a lone surrogate inside an object as its escape: distinct, and valid UTF-8.
      text('s.jsonl', 3, 'obj', '{"k":"a\\ud800"}'),
      failure('s.jsonl', 4, 'INVALID_JSON', 'field "id" is an array nested too deeply to be written as an id'),
    ]);
  });

  it('defaults textField to "text" and ids to null; handles CRLF, BOM and UTF-8 errors as text does', async () => {
    const bytes = Buffer.concat([Buffer.from('\uFEFF{"text":"a","id":1}\r\n'), Buffer.from([0x7b, 0xff, 0x7d, 0x0d, 0x0a]), Buffer.from('{"text":"c"}')]);
    expect(await linesOf('x.json', bytes)).toEqual([
      text('x.json', 0, 'a', null),
      failure('x.json', 1, 'INVALID_UTF8', 'invalid UTF-8 at byte offset 1 of the line (0xff)'),
      text('x.json', 2, 'c', null),
    ]);
  });

  it('lets options.format override the extension both ways', async () => {
    expect(await linesOf('data.txt', '{"text":"json in a .txt"}', { format: 'jsonl' })).toEqual([text('data.txt', 0, 'json in a .txt')]);
    expect(await linesOf('data.jsonl', '{"text":"raw"}', { format: 'text' })).toEqual([text('data.jsonl', 0, '{"text":"raw"}')]);
  });

  it('chooses the format by extension', () => {
    const formats = ['a.jsonl', 'a.JSONL', 'a.ndjson', 'a.json', 'a.jsonl.gz', 'a.json.GZ', 'a.ndjson.gzip', 'a.txt', 'a.txt.gz', 'a', 'jsonl', 'a.jsonl.bak', 'dir.jsonl/a.txt'].map((key) => [key, formatOf(key)]);
    expect(formats).toEqual([
      ['a.jsonl', 'jsonl'],
      ['a.JSONL', 'jsonl'],
      ['a.ndjson', 'jsonl'],
      ['a.json', 'jsonl'],
      ['a.jsonl.gz', 'jsonl'],
      ['a.json.GZ', 'jsonl'],
      ['a.ndjson.gzip', 'jsonl'],
      ['a.txt', 'text'],
      ['a.txt.gz', 'text'],
      ['a', 'text'],
      ['jsonl', 'text'],
      ['a.jsonl.bak', 'text'],
      ['dir.jsonl/a.txt', 'text'],
    ]);
  });
});

describe('readCorpusLines: streaming', () => {
  /** An endless object: line after line, produced only when the reader asks. Counts what it produced. */
  function endless(): { stream: Readable; produced: () => number } {
    let index = 0;
    const stream = new Readable({
      read() {
        this.push(Buffer.from(`line ${index}\n${'x'.repeat(1000)}\n`));
        index += 1;
      },
    });
    return { stream, produced: () => index };
  }

  it('stops reading and destroys the stream when the consumer breaks early', async () => {
    const source = endless();
    const store = new MemoryStore({});
    store.read = async () => store.track(source.stream);
    const seen: CorpusLine[] = [];
    for await (const line of readCorpusLines({ store, key: 'endless.txt', source: 'endless.txt', sizeBytes: 0 })) {
      seen.push(line);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual([text('endless.txt', 0, 'line 0'), text('endless.txt', 1, 'x'.repeat(1000)), text('endless.txt', 2, 'line 1')]);
    expect(source.stream.destroyed).toBe(true);
    // Backpressure: only about a stream buffer's worth was produced, not the endless rest.
    expect(source.produced()).toBeLessThan(100);
  });

  it('destroys a gzip source too when the consumer breaks early', async () => {
    const compressed = gzipSync(Array.from({ length: 50_000 }, (_, index) => `row ${index}`).join('\n'));
    const store = new MemoryStore({ 'g.txt.gz': compressed }, 512);
    const iterator = readCorpusLines({ store, key: 'g.txt.gz', source: 'g.txt.gz', sizeBytes: compressed.length });
    expect((await iterator.next()).value).toEqual(text('g.txt.gz', 0, 'row 0'));
    expect((await iterator.next()).value).toEqual(text('g.txt.gz', 1, 'row 1'));
    await iterator.return(undefined);
    expect(store.streams).toHaveLength(1);
    expect(store.streams[0]!.destroyed).toBe(true);
    expect(store.streams[0]!.readableEnded).toBe(false);
  });

  it('verify sees the version being read before the first line; what it throws ends the read and closes the stream', async () => {
    const store = new MemoryStore({ 'v.txt': Buffer.from('one\ntwo\n') });
    const seen: string[] = [];
    const lines = await collect(readCorpusLines({ store, key: 'v.txt', source: 'v.txt', sizeBytes: 8 }, { verify: async (version) => void seen.push(version) }));
    expect(seen).toEqual(['8']);
    expect(lines).toHaveLength(2);
    const refused = new InputChangedError('v.txt changed');
    await expect(collect(readCorpusLines({ store, key: 'v.txt', source: 'v.txt', sizeBytes: 8 }, { verify: () => Promise.reject(refused) }))).rejects.toBe(refused);
    expect(store.streams[1]!.destroyed).toBe(true);
  });

  it('destroys a real file stream when the consumer breaks early', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-read-lines-'));
    try {
      await writeFile(path.join(folder, 'big.txt'), 'a line\n'.repeat(200_000));
      const local = new LocalObjectStore(folder);
      const opened: Readable[] = [];
      const store: ObjectStore = Object.assign(Object.create(local) as LocalObjectStore, {
        open: async (key: string) => {
          const object = await local.open(key);
          opened.push(object.body);
          return object;
        },
      });
      for await (const line of readCorpusLines({ store, key: 'big.txt', source: 'big.txt', sizeBytes: 1_400_000 })) {
        expect(line).toEqual(text('big.txt', 0, 'a line'));
        break;
      }
      expect(opened).toHaveLength(1);
      expect(opened[0]!.destroyed).toBe(true);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('fails with INPUT_CHANGED naming a local file rewritten in place while it was read (its rows mixed both versions)', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-read-lines-'));
    try {
      const file = path.join(folder, 'a.txt');
      await writeFile(file, 'old line\n'.repeat(200_000));
      const store = new LocalObjectStore(folder);
      const read: CorpusLine[] = [];
      const lines = readCorpusLines({ store, key: 'a.txt', source: file, sizeBytes: 1_800_000 });
      const failed = (async () => {
        for await (const line of lines) {
          read.push(line);
          // `cp new.txt a.txt`: the same inode, truncated and written again.
          if (read.length === 1) await writeFile(file, 'new line\n'.repeat(200_000));
        }
      })().catch((error: unknown) => error);
      expect(await failed).toBeInstanceOf(InputChangedError);
      expect((await failed as Error).message).toMatch(new RegExp(`^read ${file.replace(/[.]/g, '\\.')}: the file changed while it was read`));
      // Unchanged, the same file reads to its end.
      expect(await collect(readCorpusLines({ store, key: 'a.txt', source: file, sizeBytes: 1_800_000 }))).toHaveLength(200_000);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('finds a local file appended to while a slow job reads it on the way, not only at its end (5,510 of 6,000 lines were paid for first)', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-read-lines-'));
    try {
      const file = path.join(folder, 'a.txt');
      await writeFile(file, 'old line\n'.repeat(200_000));
      const store = new LocalObjectStore(folder);
      let read = 0;
      const failed = (async () => {
        for await (const line of readCorpusLines({ store, key: 'a.txt', source: file, sizeBytes: 1_800_000 })) {
          void line;
          read += 1;
          if (read === 1) {
            await appendFile(file, 'appended line\n');
            await sleep(600); // the split waits for room (backpressure) with the file half read
          }
        }
      })().catch((error: unknown) => error);
      expect(await failed).toBeInstanceOf(InputChangedError);
      expect((await failed as Error).message).toContain('on the way: rewritten in place');
      expect(read).toBeLessThan(50_000);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('turns a stream failure mid-object into a retryable StorageUnavailableError', async () => {
    const store = new MemoryStore({});
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    store.read = async () =>
      store.track(
        Readable.from(
          (async function* () {
            yield Buffer.from('one\ntwo\nthr');
            throw reset;
          })(),
          { objectMode: false },
        ),
      );
    const seen: CorpusLine[] = [];
    const error = await (async () => {
      for await (const line of readCorpusLines({ store, key: 'n.txt', source: 'n.txt', sizeBytes: 0 })) seen.push(line);
    })().catch((caught: unknown) => caught);
    expect(seen).toEqual([text('n.txt', 0, 'one'), text('n.txt', 1, 'two')]);
    expect(error).toBeInstanceOf(StorageUnavailableError);
    expect(error).toMatchObject({ message: 'read n.txt: read ECONNRESET', retryable: true, cause: reset });
    expect(store.streams[0]!.destroyed).toBe(true);
  });

  it('passes storage errors from the store through unchanged', async () => {
    const store = new MemoryStore({});
    await expect(collect(readCorpusLines({ store, key: 'gone.txt', source: 'gone.txt', sizeBytes: 0 }))).rejects.toThrow(
      new StorageError('read memory/gone.txt: no such object'),
    );
  });
});

describe('listCorpus + readCorpusLines over S3 (s3rver)', () => {
  let s3: TestS3;
  const bucket = 'corpus-bucket';

  beforeAll(async () => {
    s3 = await startS3rver();
    await s3.createBucket(bucket);
    const store = new S3ObjectStore(s3.client, bucket);
    // Written out of key order on purpose.
    await store.write('corpus/04.txt', 'four a\nfour b');
    await store.write('corpus/', ''); // a console-made "folder" marker
    await store.write('corpus/05-data/', 'named like a folder\nstill data'); // not a marker: it has bytes
    await store.write('markers-only/', '');
    await store.write('markers-only/sub/', '');
    await store.write('corpus/01.txt', 'one a\n\none c\n');
    await store.write('corpus/03-empty.txt', '');
    await store.write('corpus/02.jsonl.gz', gzipSync('{"text":"two a","id":"x"}\n{"oops"\n'));
    await store.write('corpusx/not-under-prefix.txt', 'no');
    await store.write('elsewhere.txt', 'no');
  });

  afterAll(async () => {
    await s3?.close();
  });

  it('lists every object under a prefix in key order, skipping folder markers (empty, named with a final /), keeping empty objects', async () => {
    const objects = await collect(listCorpus(`s3://${bucket}/corpus/`, { s3Client: s3.client }));
    expect(objects.map(({ key, source, sizeBytes }) => ({ key, source, sizeBytes }))).toEqual([
      { key: 'corpus/01.txt', source: 'corpus/01.txt', sizeBytes: 13 },
      { key: 'corpus/02.jsonl.gz', source: 'corpus/02.jsonl.gz', sizeBytes: gzipSync('{"text":"two a","id":"x"}\n{"oops"\n').length },
      { key: 'corpus/03-empty.txt', source: 'corpus/03-empty.txt', sizeBytes: 0 },
      { key: 'corpus/04.txt', source: 'corpus/04.txt', sizeBytes: 13 },
      { key: 'corpus/05-data/', source: 'corpus/05-data/', sizeBytes: 30 },
    ]);
    expect(objects.every((object) => object.store.description === `s3://${bucket}`)).toBe(true);
  });

  it('reads the lines of all objects, each with its own source and line numbers', async () => {
    const lines: CorpusLine[] = [];
    for await (const object of listCorpus(`s3://${bucket}/corpus/`, { s3Client: s3.client })) {
      for await (const line of readCorpusLines(object, { textField: 'text', idField: 'id' })) lines.push(line);
    }
    let invalidJson = '';
    try {
      JSON.parse('{"oops"');
    } catch (error) {
      invalidJson = (error as Error).message;
    }
    expect(lines).toEqual([
      text('corpus/01.txt', 0, 'one a'),
      blank('corpus/01.txt', 1),
      text('corpus/01.txt', 2, 'one c'),
      text('corpus/02.jsonl.gz', 0, 'two a', 'x'),
      failure('corpus/02.jsonl.gz', 1, 'INVALID_JSON', `invalid JSON: ${invalidJson}`),
      text('corpus/04.txt', 0, 'four a'),
      text('corpus/04.txt', 1, 'four b'),
      text('corpus/05-data/', 0, 'named like a folder'),
      text('corpus/05-data/', 1, 'still data'),
    ]);
  });

  it('lists and reads keys XML cannot carry as they are (a CR: it came back as LF and named no object), from an S3 that URL-encodes them', async () => {
    const store = new S3ObjectStore(s3.client, bucket);
    const keys = ['odd-keys/a\rb.txt', 'odd-keys/p+q %25 r.txt'];
    for (const key of keys) await store.write(key, `${JSON.stringify(key)}\n`);
    // s3rver ignores `encoding-type=url`; this proxy answers as S3 does: each key encoded (a space
    // as +), and the encoding named in the result.
    const unescapeXml = (value: string): string =>
      value.replace(/&(#x?[0-9a-f]+|amp|lt|gt|quot|apos);/gi, (_, name: string) =>
        name[0] === '#' ? String.fromCodePoint(Number(name[1] === 'x' ? `0${name.slice(1)}` : name.slice(1))) : ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[name]!,
      );
    const encodeKey = (key: string): string => encodeURIComponent(key).replace(/%20/g, '+').replace(/%2F/g, '/');
    const proxy = await startRewritingProxy(s3.endpoint, (body, _index, request) => {
      const text = body.toString('utf8');
      if (!request.url.includes('encoding-type=url') || !text.includes('<ListBucketResult')) return { body };
      const encoded = text.replace(/<Key>([^<]*)<\/Key>/g, (_, key: string) => `<Key>${encodeKey(unescapeXml(key))}</Key>`).replace('</Name>', '</Name><EncodingType>url</EncodingType>');
      return { body: Buffer.from(encoded) };
    });
    const client = createS3Client({ region: 'us-east-1', endpoint: proxy.url, forcePathStyle: true, checksums: 'WHEN_REQUIRED' }, { credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    try {
      const objects = await collect(listCorpus(`s3://${bucket}/odd-keys/`, { s3Client: client }));
      expect(objects.map((object) => object.key)).toEqual(keys);
      for (const object of objects) expect(await collect(readCorpusLines(object))).toEqual([text(object.source, 0, JSON.stringify(object.key))]);
    } finally {
      client.destroy();
      await proxy.close();
    }
    // Straight from s3rver, which does not encode: keys as it sends them, not decoded a second time.
    expect((await collect(store.list('odd-keys/p'))).map((object) => object.key)).toEqual([keys[1]]);
  });

  it('lists a single object by its key', async () => {
    const objects = await collect(listCorpus(`s3://${bucket}/corpus/04.txt`, { s3Client: s3.client }));
    expect(objects.map(({ key, source, sizeBytes }) => ({ key, source, sizeBytes }))).toEqual([{ key: 'corpus/04.txt', source: 'corpus/04.txt', sizeBytes: 13 }]);
  });

  it('suggests the prefix form when a key is missing but objects exist under key/', async () => {
    await expect(collect(listCorpus(`s3://${bucket}/corpus`, { s3Client: s3.client }))).rejects.toThrow(
      new StorageError(`input s3://${bucket}/corpus: no such object, but objects exist under s3://${bucket}/corpus/ (to read them all, use s3://${bucket}/corpus/)`),
    );
    await expect(assertInputExists(`s3://${bucket}/corpus/missing.txt`, { s3Client: s3.client })).rejects.toThrow(
      new StorageError(`input s3://${bucket}/corpus/missing.txt: no such object`),
    );
    // Folder markers alone are nothing to read: no hint that would only lead to "no objects found".
    await expect(assertInputExists(`s3://${bucket}/markers-only`, { s3Client: s3.client })).rejects.toThrow(
      new StorageError(`input s3://${bucket}/markers-only: no such object`),
    );
  });

  it('fails clearly for an empty prefix and a missing bucket; passes for an existing input', async () => {
    await expect(assertInputExists(`s3://${bucket}/nothing/`, { s3Client: s3.client })).rejects.toThrow(
      new StorageError(`input s3://${bucket}/nothing/: no objects found`),
    );
    await expect(assertInputExists('s3://no-such-bucket/x/', { s3Client: s3.client })).rejects.toThrow(
      new StorageError('list s3://no-such-bucket/x/: no such bucket'),
    );
    await expect(assertInputExists(`s3://${bucket}/corpus/`, { s3Client: s3.client })).resolves.toBeUndefined();
  });
});

describe('listCorpus over local files', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'embedq-corpus-'));
    const files: Record<string, string> = {
      'corpus/b.txt': 'b0\nb1\n',
      'corpus/a/x.txt': 'ax0\n',
      'corpus/a-1.txt': 'a-1 0\n',
      'corpus/empty.txt': '',
      'corpus/sub/z.jsonl': '{"text":"z0"}\n',
      'corpus/.hidden.txt': 'hidden',
      'corpus/.git/config': 'hidden',
      'corpus/sub/.DS_Store': 'hidden',
      'emptyfolder/.only-hidden': 'hidden',
    };
    for (const [name, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(root, name)), { recursive: true });
      await writeFile(path.join(root, name), content);
    }
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const sources = async (input: string): Promise<string[]> => (await collect(listCorpus(input))).map((object) => object.source);

  it('lists a folder recursively in key order, skipping hidden entries; sources are folder + key', async () => {
    const folder = path.join(root, 'corpus');
    expect(await sources(`${folder}/`)).toEqual(['a-1.txt', 'a/x.txt', 'b.txt', 'empty.txt', 'sub/z.jsonl'].map((key) => `${folder}/${key}`));
    const relative = path.relative(process.cwd(), folder);
    expect(await sources(relative)).toEqual(['a-1.txt', 'a/x.txt', 'b.txt', 'empty.txt', 'sub/z.jsonl'].map((key) => path.posix.normalize(`${relative}/${key}`)));
    expect(await sources(`./${relative}//`)).toEqual(['a-1.txt', 'a/x.txt', 'b.txt', 'empty.txt', 'sub/z.jsonl'].map((key) => path.posix.normalize(`${relative}/${key}`)));
  });

  it('enters links to folders, in key order, and refuses a link that loops (their files were skipped without a word)', async () => {
    const folder = path.join(root, 'linked');
    await mkdir(path.join(root, 'shared/deeper'), { recursive: true });
    await writeFile(path.join(root, 'shared/s.txt'), 's0\n');
    await writeFile(path.join(root, 'shared/deeper/d.txt'), 'd0\n');
    await mkdir(folder);
    await writeFile(path.join(folder, 'own.txt'), 'own\n');
    await writeFile(path.join(folder, 'm.txt'), 'm\n');
    await symlink('../shared', path.join(folder, 'link'));
    expect(await sources(folder)).toEqual(['link/deeper/d.txt', 'link/s.txt', 'm.txt', 'own.txt'].map((key) => `${folder}/${key}`));
    // A link back to a folder above it would be walked forever.
    await symlink('..', path.join(root, 'shared/deeper/up'));
    await expect(sources(folder)).rejects.toThrow(/list .*linked\/link\/deeper\/up: the link leads back to a folder it is in \(.*shared\), a loop/);
    await rm(path.join(root, 'shared/deeper/up'));
    // An output's listing (what --overwrite deletes) does not follow them.
    expect(keysOfStore(await collect(new LocalObjectStore(folder).list('')))).toEqual(['m.txt', 'own.txt']);
  });

  it('refuses a link that leads nowhere (dangling: an unmounted share; a link to itself), naming it (it was skipped without a word)', async () => {
    const folder = path.join(root, 'dangling');
    await mkdir(folder);
    await writeFile(path.join(folder, 'a.txt'), 'a\n');
    await symlink('/mnt/embedq-no-such-share/corpus', path.join(folder, 'share'));
    await expect(sources(folder)).rejects.toThrow(new StorageError(`list ${folder}/share: the link leads nowhere (ENOENT): its target is missing, not mounted, or a loop of links; remove it or mount what it points to`));
    await rm(path.join(folder, 'share'));
    await symlink('self.txt', path.join(folder, 'self.txt'));
    await expect(sources(folder)).rejects.toThrow(/list .*dangling\/self\.txt: the link leads nowhere \(ELOOP\)/);
    // An output's listing (what --overwrite deletes) passes over them, as before.
    expect(keysOfStore(await collect(new LocalObjectStore(folder).list('')))).toEqual(['a.txt']);
  });

  it('passes over hidden entries before any check: their names and links, never read, do not refuse the input', async () => {
    const folder = path.join(root, 'with-hidden');
    await mkdir(path.join(folder, '.git/sub'), { recursive: true });
    await writeFile(path.join(folder, 'seen.txt'), 'seen\n');
    await mkdir(Buffer.concat([Buffer.from(`${folder}/.cache-d`), Buffer.from([0xff])]));
    await writeFile(Buffer.concat([Buffer.from(`${folder}/.caf`), Buffer.from([0xe9])]), 'hidden\n');
    await symlink(folder, path.join(folder, '.git/sub/loop'));
    await symlink('.', path.join(folder, '.loop'));
    expect(await sources(folder)).toEqual([`${folder}/seen.txt`]);
  });

  it("refuses a link that leads into the job's output, or a folder holding it (the run read its own shards as corpus lines)", async () => {
    const folder = path.join(root, 'into-output');
    const outputs = path.join(root, 'outputs');
    await mkdir(path.join(outputs, 'r1'), { recursive: true });
    await writeFile(path.join(outputs, 'r1/part-00000.parquet'), 'PAR1 not text');
    await mkdir(folder);
    await writeFile(path.join(folder, 'own.txt'), 'own\n');
    await symlink(outputs, path.join(folder, 'runs'));
    const listed = (output: string): Promise<string[]> => collect(listCorpus(folder, { output })).then((objects) => objects.map((object) => object.source));
    // Into the output itself, and into the folder that holds this run's output ({runId} outputs of a schedule).
    await expect(listed(path.join(outputs, 'r1'))).rejects.toThrow(/into-output\/runs: the link leads to .*outputs, which holds or is inside this job's output .*outputs\/r1; the run would read its own files/);
    await expect(listed(path.join(outputs, 'r2/'))).rejects.toThrow(/which holds or is inside this job's output/);
    // An output elsewhere (or none, as for `plan`) leaves the link to be read.
    expect(await listed(path.join(root, 'elsewhere'))).toEqual([`${folder}/own.txt`, `${folder}/runs/r1/part-00000.parquet`]);
    expect(await sources(folder)).toHaveLength(2);
  });

  it('refuses a file or folder whose name is not UTF-8 (its lines were lost without a word), naming it', async () => {
    const folder = path.join(root, 'latin1');
    await mkdir(folder);
    await writeFile(path.join(folder, 'fine.txt'), 'fine\n');
    await writeFile(Buffer.concat([Buffer.from(`${folder}/caf`), Buffer.from([0xe9]), Buffer.from('.txt')]), 'lost\n');
    await expect(sources(folder)).rejects.toThrow(new StorageError(`list ${folder}/caf\\xe9.txt: the name is not UTF-8, so it cannot be a key (keys are UTF-8, as in S3); rename it`));
    // An output's listing passes over it: embedq writes no such name there.
    expect(keysOfStore(await collect(new LocalObjectStore(folder).list('')))).toEqual(['fine.txt']);
  });

  it('reads the lines of a folder in order', async () => {
    const lines: CorpusLine[] = [];
    for await (const object of listCorpus(path.join(root, 'corpus'))) {
      for await (const line of readCorpusLines(object, { textField: 'text' })) lines.push(line);
    }
    const source = (key: string): string => `${root}/corpus/${key}`;
    expect(lines).toEqual([
      text(source('a-1.txt'), 0, 'a-1 0'),
      text(source('a/x.txt'), 0, 'ax0'),
      text(source('b.txt'), 0, 'b0'),
      text(source('b.txt'), 1, 'b1'),
      text(source('sub/z.jsonl'), 0, 'z0'),
    ]);
  });

  it('lists a single file with its path exactly as given', async () => {
    const given = `${root}/corpus/../corpus/b.txt`;
    const objects = await collect(listCorpus(given));
    expect(objects.map(({ key, source, sizeBytes }) => ({ key, source, sizeBytes }))).toEqual([{ key: 'b.txt', source: given, sizeBytes: 6 }]);
  });

  it('fails clearly for a missing path, an empty folder and an unsupported scheme', async () => {
    const missing = path.join(root, 'missing.txt');
    await expect(assertInputExists(missing)).rejects.toThrow(new StorageError(`input ${missing}: no such file or folder`));
    const empty = path.join(root, 'emptyfolder');
    await expect(assertInputExists(empty)).rejects.toThrow(new StorageError(`input ${empty}: no objects found (hidden files are skipped)`));
    await expect(assertInputExists('gs://bucket/x')).rejects.toBeInstanceOf(ConfigError);
    await expect(assertInputExists('s3://bucket/x')).rejects.toThrow(new ConfigError('s3://bucket/x: an S3 client is needed for s3:// locations'));
  });
});

function keysOfStore(objects: StoredObject[]): string[] {
  return objects.map((object) => object.key);
}
