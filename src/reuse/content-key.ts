import { createHash } from 'node:crypto';

import type { EmbeddingParameters } from '../embedding.js';

/**
 * The content key of a line: SHA-256 over length-prefixed fields, never a joined string, so no
 * two field lists hash alike (`['a','b']` vs `['a-b']`), and every parameter that shapes the
 * vectors is in it (a key without the dimension would hand 1024-d vectors to a 64-d run).
 *
 * Layout: the domain tag, then model, dimension, output type, text type, instruct, api, text;
 * each field is a presence byte (0 absent, 1 present) and, when present, its UTF-8 length as a
 * 4-byte big-endian integer followed by the bytes. Changing the layout changes every key, and
 * the next `--reuse` run then embeds everything again: bump the tag when you do.
 */
const DOMAIN = 'embedq/content-key/v1';

export type ContentKeyParameters = Pick<EmbeddingParameters, 'model' | 'dimension' | 'outputType' | 'textType' | 'instruct' | 'api'>;

/** The 32-byte key. */
export function contentKey(text: string, parameters: ContentKeyParameters): Buffer {
  const hash = createHash('sha256');
  const field = (value: string | undefined): void => {
    if (value === undefined) {
      hash.update(Uint8Array.of(0));
      return;
    }
    const bytes = Buffer.from(value, 'utf8');
    const header = Buffer.alloc(5);
    header[0] = 1;
    header.writeUInt32BE(bytes.length, 1);
    hash.update(header);
    hash.update(bytes);
  };
  field(DOMAIN);
  field(parameters.model);
  field(String(parameters.dimension));
  field(parameters.outputType);
  field(parameters.textType);
  field(parameters.instruct);
  field(parameters.api);
  field(text);
  return hash.digest();
}

/** The key as stored in a shard's `content_hash` column: 64 lowercase hex digits. */
export function contentHash(text: string, parameters: ContentKeyParameters): string {
  return contentKey(text, parameters).toString('hex');
}

/** Parses a `content_hash` value back into bytes; undefined for anything but 64 hex digits. */
export function parseContentHash(hex: string | null | undefined): Buffer | undefined {
  if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex)) return undefined;
  return Buffer.from(hex, 'hex');
}
