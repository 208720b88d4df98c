import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate, inflateRaw } from 'node:zlib';

import { ProviderUnavailableError } from '../errors.js';

type Decode = (bytes: Uint8Array) => Promise<Buffer>;
const gunzipAsync: Decode = promisify(gunzip);
const inflateAsync: Decode = promisify(inflate);
const inflateRawAsync: Decode = promisify(inflateRaw);
const decoders: Record<string, Decode> = {
  gzip: gunzipAsync,
  'x-gzip': gunzipAsync,
  br: promisify(brotliDecompress),
  // HTTP's "deflate" is zlib-wrapped by the standard, raw by some servers: the zlib header tells
  // (method 8 in the low nibble, and the two header bytes a multiple of 31, RFC 1950).
  deflate: (bytes) => ((bytes[0]! & 0x0f) === 8 && ((bytes[0]! << 8) | bytes[1]!) % 31 === 0 ? inflateAsync(bytes) : inflateRawAsync(bytes)),
};

/** What the client asks for, as fetch did: DashScope's gateway answers gzip (dashscope-facts.md). */
export const ACCEPT_ENCODING = 'gzip, deflate, br';

/**
 * Undoes a response's `Content-Encoding` (codings applied in order, so undone in reverse), off the
 * main thread (zlib's thread pool). No header, or `identity`: the bytes as they are.
 */
export async function decodeContentEncoding(bytes: Uint8Array, header: string | string[] | undefined): Promise<Uint8Array> {
  if (header === undefined) return bytes;
  const codings = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');
  let decoded = bytes;
  for (const coding of codings.reverse()) {
    const decode = decoders[coding];
    if (!decode) throw new ProviderUnavailableError(`DashScope answered with an unsupported Content-Encoding "${coding}"`, {});
    decoded = await decode(decoded);
  }
  return decoded;
}
