import { Buffer } from 'node:buffer';

import { EmbedqError } from '../errors.js';
import type { PreviousRowRef } from './previous-vectors.js';

/**
 * The lines of one shard that take a previous row's vectors instead of a DashScope call: the
 * splitter records them when it closes the shard, the shard writer copies their vectors. They are
 * kept in the shard's Redis buffer in this compact binary form (about 60 bytes a line plus the
 * id; the text is not stored, it comes from the previous row, whose content hash covers it).
 *
 * ```
 * "EQR" u8 version=1 | u32 sources | sources × str | u32 count
 * per line  f64 row | f64 line | u32 source index | u32 previous shard | u32 row in that shard
 *           | u8 flags (1 id, 2 upsert) | 32 bytes content key | [str id]
 * str       u32 byteLength | UTF-8 bytes
 * ```
 */
export interface ReusedLine extends PreviousRowRef {
  row: number;
  source: string;
  line: number;
  id: string | null;
  /** The 32-byte content key of the line (checked against the previous row's `content_hash`). */
  hash: Buffer;
  /** With `--id-field`: the id is new or its text changed, so the row also goes to `_delta/` upserts. */
  upsert: boolean;
}

export class ReuseListError extends EmbedqError {
  readonly code = 'BATCH_CORRUPT';
  readonly retryable = false;
}

const MAGIC = 'EQR';
const VERSION = 1;
const HAS_ID = 1;
const UPSERT = 2;

export function encodeReuseList(lines: readonly ReusedLine[]): Buffer {
  const sources = new Map<string, number>();
  for (const line of lines) if (!sources.has(line.source)) sources.set(line.source, sources.size);
  const parts: Buffer[] = [Buffer.from(MAGIC, 'latin1'), Buffer.of(VERSION), u32(sources.size)];
  for (const source of sources.keys()) parts.push(str(source));
  parts.push(u32(lines.length));
  for (const line of lines) {
    if (line.hash.length !== 32) throw new RangeError(`row ${line.row}: content key must be 32 bytes`);
    const fixed = Buffer.alloc(8 + 8 + 4 + 4 + 4 + 1);
    fixed.writeDoubleLE(line.row, 0);
    fixed.writeDoubleLE(line.line, 8);
    fixed.writeUInt32LE(sources.get(line.source)!, 16);
    fixed.writeUInt32LE(line.shard, 20);
    fixed.writeUInt32LE(line.rowInShard, 24);
    fixed[28] = (line.id === null ? 0 : HAS_ID) | (line.upsert ? UPSERT : 0);
    parts.push(fixed, line.hash);
    if (line.id !== null) parts.push(str(line.id));
  }
  return Buffer.concat(parts);
}

export function decodeReuseList(buffer: Buffer): ReusedLine[] {
  let p = 0;
  const need = (bytes: number, what: string): void => {
    if (p + bytes > buffer.length) throw new ReuseListError(`reuse list is truncated: ${what} needs ${bytes} bytes at byte ${p}`);
  };
  const readU32 = (what: string): number => {
    need(4, what);
    const value = buffer.readUInt32LE(p);
    p += 4;
    return value;
  };
  const readString = (what: string): string => {
    const length = readU32(`${what} length`);
    need(length, what);
    const value = buffer.toString('utf8', p, p + length);
    p += length;
    return value;
  };
  need(4, 'header');
  if (buffer.toString('latin1', 0, 3) !== MAGIC || buffer[3] !== VERSION) throw new ReuseListError('not a reuse list (bad magic bytes or version)');
  p = 4;
  const sources = Array.from({ length: readU32('source count') }, () => readString('source'));
  const count = readU32('line count');
  need(count * 61, `${count} lines`); // checked before allocating
  const lines = new Array<ReusedLine>(count);
  for (let i = 0; i < count; i++) {
    need(29 + 32, `line ${i}`);
    const source = sources[buffer.readUInt32LE(p + 16)];
    const flags = buffer[p + 28]!;
    if (source === undefined || flags > (HAS_ID | UPSERT)) throw new ReuseListError(`reuse list is corrupted at line ${i}`);
    const row = buffer.readDoubleLE(p);
    const line = buffer.readDoubleLE(p + 8);
    const shard = buffer.readUInt32LE(p + 20);
    const rowInShard = buffer.readUInt32LE(p + 24);
    const hash = Buffer.from(buffer.subarray(p + 29, p + 61));
    p += 61;
    const id = flags & HAS_ID ? readString('id') : null;
    lines[i] = { row, source, line, id, shard, rowInShard, hash, upsert: (flags & UPSERT) !== 0 };
  }
  if (p !== buffer.length) throw new ReuseListError(`reuse list has ${buffer.length - p} unexpected trailing bytes`);
  return lines;
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value, 0);
  return buffer;
}

function str(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  return Buffer.concat([u32(bytes.length), bytes]);
}
