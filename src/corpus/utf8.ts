import { isUtf8 } from 'node:buffer';

/**
 * Decodes strictly: the text, or undefined when `bytes` is not well-formed UTF-8 (overlongs,
 * surrogates and truncated sequences included). Same verdict as `new TextDecoder('utf-8',
 * { fatal: true })`, but `isUtf8` (simdutf) plus `toString` is several times faster, and unlike
 * TextDecoder it never drops a leading U+FEFF, which only the start of an object may lose.
 */
export function decodeUtf8Strict(bytes: Buffer): string | undefined {
  return isUtf8(bytes) ? bytes.toString('utf8') : undefined;
}

/**
 * The 0-based offset where the first ill-formed UTF-8 sequence starts, or -1 when there is none.
 * Follows RFC 3629's table of well-formed sequences; only called for lines that failed to decode.
 */
export function firstInvalidUtf8Offset(bytes: Uint8Array): number {
  let index = 0;
  while (index < bytes.length) {
    const lead = bytes[index]!;
    if (lead < 0x80) {
      index += 1;
      continue;
    }
    let length: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) length = 2;
    else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead === 0xe0) low = 0xa0; // overlong
      if (lead === 0xed) high = 0x9f; // surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead === 0xf0) low = 0x90; // overlong
      if (lead === 0xf4) high = 0x8f; // above U+10FFFF
    } else return index;
    // The second byte has the tighter range; the rest are plain continuation bytes.
    for (let offset = 1; offset < length; offset += 1) {
      const byte = bytes[index + offset];
      const min = offset === 1 ? low : 0x80;
      const max = offset === 1 ? high : 0xbf;
      if (byte === undefined || byte < min || byte > max) return index;
    }
    index += length;
  }
  return -1;
}
