import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { contentHash, contentKey, parseContentHash, type ContentKeyParameters } from '../../src/reuse/content-key.js';

const base: ContentKeyParameters = { model: 'text-embedding-v4', dimension: 1024, outputType: 'dense&sparse', textType: 'document', instruct: undefined, api: 'dashscope' };

describe('content key', () => {
  it('is SHA-256 over the documented length-prefixed layout', () => {
    // Built here byte by byte from the layout in content-key.ts, independently of its code.
    const present = (value: string): Buffer => {
      const bytes = Buffer.from(value, 'utf8');
      return Buffer.concat([Buffer.from([1, bytes.length >>> 24, (bytes.length >>> 16) & 255, (bytes.length >>> 8) & 255, bytes.length & 255]), bytes]);
    };
    const expected = createHash('sha256')
      .update(Buffer.concat([
        present('embedq/content-key/v1'), present('text-embedding-v4'), present('1024'), present('dense&sparse'), present('document'),
        Buffer.from([0]), present('dashscope'), present('春眠不觉晓 river'),
      ]))
      .digest('hex');
    expect(contentHash('春眠不觉晓 river', base)).toBe(expected);
    expect(contentKey('春眠不觉晓 river', base)).toHaveLength(32);
  });

  it('changes with every parameter that shapes the vectors', () => {
    const key = contentHash('hello', base);
    const variants: Array<Partial<ContentKeyParameters>> = [
      { model: 'text-embedding-v3' },
      { dimension: 64 },
      { outputType: 'dense' },
      { textType: 'query' },
      { instruct: 'Given a question, retrieve passages' },
      { instruct: '' }, // an empty instruction is not the same as none
      { api: 'openai' },
    ];
    const keys = variants.map((variant) => contentHash('hello', { ...base, ...variant }));
    expect(new Set([key, ...keys]).size).toBe(variants.length + 1);
    expect(contentHash('hello', { ...base })).toBe(key); // deterministic
    expect(contentHash('hello ', base)).not.toBe(key);
  });

  it('does not let a boundary move between fields', () => {
    // Joined strings would collide here: "ab" + "c" vs "a" + "bc", and an instruction that ends where the text starts.
    expect(contentHash('c', { ...base, instruct: 'ab' })).not.toBe(contentHash('bc', { ...base, instruct: 'a' }));
    expect(contentHash('document', { ...base, textType: 'query', instruct: 'x' })).not.toBe(contentHash('x', { ...base, textType: 'query', instruct: 'document' }));
  });

  it('parses stored hex back and rejects anything else', () => {
    const hex = contentHash('hello', base);
    expect(parseContentHash(hex)?.toString('hex')).toBe(hex);
    expect(parseContentHash(hex.toUpperCase())).toBeUndefined();
    expect(parseContentHash(hex.slice(1))).toBeUndefined();
    expect(parseContentHash(null)).toBeUndefined();
  });
});
