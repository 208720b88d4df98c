import { describe, expect, it } from 'vitest';

import { parseJsonBytes } from '../../src/dashscope/parse-json-bytes.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import { nativeSuccessBody } from '../../src/emulator/serialize-response.js';

const KEYS = new Set(['embedding']);
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

/** What JSON.parse gives, with `embedding` arrays rounded to float32 as the decoder stores them. */
function reference(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => (key === 'embedding' && Array.isArray(value) ? Float32Array.from(value as number[]) : value));
}

describe('parseJsonBytes', () => {
  it('reads an emulator response exactly as JSON.parse + Math.fround would', () => {
    const parameters = { model: 'text-embedding-v4', dimension: 1024, outputType: 'dense&sparse', textType: 'document' } as const;
    const texts = ['风急天高猿啸哀，渚清沙白鸟飞回。', 'The quick brown fox "quoted" \\ backslash', 'naïve café — ünïcode ✓ 😀'];
    const items = texts.map((text, index) => ({ index, ...emulatorEmbedding(text, parameters) }));
    const body = nativeSuccessBody(items, 42, 'req-1');
    const parsed = parseJsonBytes(body, KEYS);
    expect(parsed).toEqual(reference(Buffer.from(body).toString('utf8')));
    const first = (parsed as { output: { embeddings: Array<{ embedding: Float32Array }> } }).output.embeddings[0]!.embedding;
    expect(first).toBeInstanceOf(Float32Array);
    expect(Array.from(first)).toEqual(Array.from(items[0]!.dense!));
  });

  it('matches JSON.parse bit for bit on awkward numbers', () => {
    const numbers = [
      '0', '-0', '-0.0', '1', '-1', '0.1', '0.30000000000000004', '-0.0238461103290319', '0.9238461103290319', '123456789012345678901234567890',
      '1e-7', '1E+3', '-2.5e-10', '4.9e-324', '1.7976931348623157e308', '0.000000000000000000000001', '3.14159265358979323846264338327950288',
      '9007199254740993', '1.5000000000000000000000', '100e-2',
    ];
    for (const number of numbers) {
      const text = `{"embedding":[${number}],"plain":[${number}]}`;
      const parsed = parseJsonBytes(bytes(text), KEYS) as { embedding: Float32Array; plain: number[] };
      const expected = JSON.parse(text) as { plain: number[] };
      expect(Object.is(parsed.plain[0], expected.plain[0]), number).toBe(true);
      expect(Object.is(parsed.embedding[0], Math.fround(expected.plain[0]!)), number).toBe(true);
    }
  });

  it('reads random float32 values written with 16 decimals exactly', () => {
    const values = Float32Array.from({ length: 5000 }, (_, index) => Math.fround(Math.sin(index * 12.9898) * (index % 7 === 0 ? 3 : 0.05)));
    const text = `{"embedding":[${Array.from(values, (value) => value.toFixed(16)).join(',')}]}`;
    const parsed = parseJsonBytes(bytes(text), KEYS) as { embedding: Float32Array };
    expect(Array.from(parsed.embedding)).toEqual(Array.from(Float32Array.from(JSON.parse(text).embedding as number[])));
  });

  it('handles whitespace, nesting, literals, escapes and empty containers like JSON.parse', () => {
    const text = ' { "a" : [ 1 , 2.5 , { "b" : null } ] , "t" : true , "f" : false , "s" : "x\\"y\\u00e9\\n" , "e" : [ ] , "o" : { } , "__proto__" : 1 } ';
    expect(parseJsonBytes(bytes(text), KEYS)).toEqual(JSON.parse(text));
    expect(Object.keys(parseJsonBytes(bytes(text), KEYS) as object)).toContain('__proto__');
  });

  it('gives up (undefined) on anything that is not valid JSON, so the caller falls back', () => {
    for (const text of ['', '{', '{"a":}', '[1,]', '{"a":1,}', '01', '1.', '-', 'tru', '"unterminated', '{"a":1} x', '{"embedding":[1,"x"]}', '{"a":"\u0001"}']) {
      expect(parseJsonBytes(bytes(text), KEYS), text).toBeUndefined();
    }
  });
});
