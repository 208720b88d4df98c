/** The byte orders a UTF-16 byte order mark announces. */
export type Utf16ByteOrder = 'utf-16le' | 'utf-16be';

/** A UTF-16 byte order mark's two bytes: FF FE little-endian, FE FF big-endian. */
export function utf16ByteOrder(head: Uint8Array): Utf16ByteOrder | undefined {
  if (head[0] === 0xff && head[1] === 0xfe) return 'utf-16le';
  if (head[0] === 0xfe && head[1] === 0xff) return 'utf-16be';
  return undefined;
}

/** A surrogate without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * UTF-16 bytes (after their byte order mark) as UTF-8, chunk by chunk. Windows tools write
 * UTF-16 with a mark (PowerShell's `>`, Excel's "Unicode Text"); read as UTF-8, every line came out
 * with NUL bytes between its letters, and was embedded so. A pair split across chunks is joined.
 * What is not UTF-16 (a lone surrogate, an odd last byte) becomes bytes that are not UTF-8 either,
 * so its line is refused as the line reader refuses invalid UTF-8, and only that line.
 */
export async function* utf16ToUtf8(chunks: AsyncIterable<Buffer>, byteOrder: Utf16ByteOrder): AsyncGenerator<Buffer> {
  let carry = Buffer.alloc(0);
  for await (const chunk of chunks) {
    const bytes = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
    let usable = bytes.length - (bytes.length % 2);
    // A high surrogate last: its pair is in the next chunk.
    if (usable >= 2 && isHighSurrogate(bytes, usable - 2, byteOrder)) usable -= 2;
    carry = Buffer.from(bytes.subarray(usable));
    if (usable > 0) yield utf8Of(decode(bytes.subarray(0, usable), byteOrder));
  }
  if (carry.length >= 2) yield utf8Of(decode(carry.subarray(0, 2), byteOrder));
  if (carry.length % 2 === 1) yield Buffer.of(0xff); // never in UTF-8
}

function isHighSurrogate(bytes: Buffer, at: number, byteOrder: Utf16ByteOrder): boolean {
  const high = byteOrder === 'utf-16le' ? bytes[at + 1]! : bytes[at]!;
  return high >= 0xd8 && high <= 0xdb;
}

function decode(bytes: Buffer, byteOrder: Utf16ByteOrder): string {
  // Node decodes only little-endian (keeping lone surrogates); swap a copy (the chunk may be shared).
  return byteOrder === 'utf-16le' ? bytes.toString('utf16le') : Buffer.from(bytes).swap16().toString('utf16le');
}

/** UTF-8 of `text`, a lone surrogate written as its three bytes (`ED A0 80`…), which UTF-8 forbids. */
function utf8Of(text: string): Buffer {
  if (!LONE_SURROGATE.test(text)) return Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  let from = 0;
  for (const match of text.matchAll(new RegExp(LONE_SURROGATE, 'g'))) {
    parts.push(Buffer.from(text.slice(from, match.index), 'utf8'));
    const unit = text.charCodeAt(match.index);
    parts.push(Buffer.of(0xe0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3f), 0x80 | (unit & 0x3f)));
    from = match.index + 1;
  }
  parts.push(Buffer.from(text.slice(from), 'utf8'));
  return Buffer.concat(parts);
}
