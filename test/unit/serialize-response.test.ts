import { describe, expect, it } from 'vitest';

import { compatSuccessBody, formatFloat32, nativeSuccessBody } from '../../src/emulator/serialize-response.js';

describe('formatFloat32', () => {
  it('round-trips every float32 through JSON.parse and Math.fround', () => {
    let state = 12345;
    const random = (): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    const values = new Float32Array(200_000);
    for (let index = 0; index < values.length; index++) {
      // Magnitudes from 1e-9 to 2, both signs.
      values[index] = (random() < 0.5 ? -1 : 1) * 10 ** (-9 + 9.3 * random());
    }
    const edge = [0, -0, 1, -1, 0.5, 1e-6, -1e-6, 9.99999e-7, 0.99999994, 0.1, 3e-38, 1.1754943508222875e-38];
    const all = Float32Array.from([...values, ...edge]);
    const body = nativeSuccessBody([{ index: 0, dense: all, sparse: null }], 1, 'rid');
    const parsed = (JSON.parse(Buffer.from(body).toString()) as { output: { embeddings: [{ embedding: number[] }] } }).output.embeddings[0].embedding;
    expect(parsed).toHaveLength(all.length);
    const mismatches = parsed.filter((value, index) => Math.fround(value) !== all[index]);
    expect(mismatches).toEqual([]);
  });

  it('looks like DashScope numbers', () => {
    // The float32 nearest to the docs' -0.0238461103439331, with 16 decimals like the docs.
    expect(formatFloat32(Math.fround(-0.0238461103439331))).toBe('-0.0238461103290319');
    expect(formatFloat32(Math.fround(0.25))).toBe('0.2500000000000000');
    expect(formatFloat32(0)).toBe('0.0');
    expect(formatFloat32(1)).toBe('1');
  });
});

describe('success bodies', () => {
  const items = [
    { index: 1, dense: new Float32Array([0.5, -0.25]), sparse: [{ index: 3, value: Math.fround(0.1), token: 'a"b风' }] },
    { index: 0, dense: new Float32Array([0.125, 0]), sparse: [] },
  ];

  it('builds the native body', () => {
    expect(JSON.parse(Buffer.from(nativeSuccessBody(items, 7, 'rid')).toString())).toEqual({
      output: {
        embeddings: [
          { text_index: 1, embedding: [0.5, -0.25], sparse_embedding: [{ index: 3, value: Math.fround(0.1), token: 'a"b风' }] },
          { text_index: 0, embedding: [0.125, 0], sparse_embedding: [] },
        ],
      },
      usage: { total_tokens: 7 },
      request_id: 'rid',
    });
  });

  it('builds the compatible-mode body', () => {
    expect(JSON.parse(Buffer.from(compatSuccessBody(items, 'text-embedding-v4', 7, 'rid')).toString())).toEqual({
      data: [
        { embedding: [0.5, -0.25], index: 1, object: 'embedding' },
        { embedding: [0.125, 0], index: 0, object: 'embedding' },
      ],
      model: 'text-embedding-v4',
      object: 'list',
      usage: { prompt_tokens: 7, total_tokens: 7 },
      id: 'rid',
    });
  });
});
