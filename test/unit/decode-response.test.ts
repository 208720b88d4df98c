import { describe, expect, it } from 'vitest';

import { decodeCompatResponse, decodeNativeResponse, type DecodeExpectation } from '../../src/dashscope/decode-response.js';
import { ProviderUnavailableError } from '../../src/errors.js';

const expect2: DecodeExpectation = { count: 2, dimension: 2, dense: true, sparse: true };
const nativeBody = (embeddings: unknown[], extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ output: { embeddings }, usage: { total_tokens: 9 }, request_id: 'rid', ...extra });
const item = (textIndex: unknown, embedding: unknown = [0.5, -0.25], sparse: unknown = [{ index: 7, value: 0.1, token: 'wind' }]) => ({
  text_index: textIndex,
  embedding,
  sparse_embedding: sparse,
});

describe('decodeNativeResponse', () => {
  it('places items by text_index, not by array order', () => {
    const result = decodeNativeResponse(nativeBody([item(1, [1, 2], []), item(0, [3, 4])]), expect2);
    expect(result.items).toEqual([
      { dense: new Float32Array([3, 4]), sparse: [{ index: 7, value: Math.fround(0.1), token: 'wind' }] },
      { dense: new Float32Array([1, 2]), sparse: [] },
    ]);
    expect(result.totalTokens).toBe(9);
    expect(result.requestId).toBe('rid');
  });

  it('leaves out what the output type did not ask for', () => {
    const result = decodeNativeResponse(nativeBody([item(0), item(1)]), { ...expect2, sparse: false });
    expect(result.items.map((entry) => entry.sparse)).toEqual([null, null]);
    const sparseOnly = decodeNativeResponse(nativeBody([{ text_index: 0, sparse_embedding: [] }, { text_index: 1, sparse_embedding: [] }]), { ...expect2, dense: false });
    expect(sparseOnly.items).toEqual([{ dense: null, sparse: [] }, { dense: null, sparse: [] }]);
  });

  it.each([
    ['a duplicate index', nativeBody([item(0), item(0)]), 'text_index 0 appears twice'],
    ['an index out of range', nativeBody([item(0), item(2)]), 'text_index 2 is outside 0..1'],
    ['a missing index field', nativeBody([item(0), item(undefined)]), 'text_index undefined is outside 0..1'],
    ['too few items', nativeBody([item(0)]), '1 embeddings for 2 texts'],
    ['a wrong dimension', nativeBody([item(0), item(1, [1, 2, 3])]), 'embedding has 3 values, expected dimension 2'],
    ['a non-number', nativeBody([item(0), item(1, [1, 'x'])]), 'embedding holds a non-number'],
    ['missing sparse', nativeBody([item(0), item(1, [1, 2], null)]), 'sparse_embedding is missing or not an array'],
    ['a bad sparse entry', nativeBody([item(0), item(1, [1, 2], [{ index: 1, value: 'x', token: 't' }])]), 'a sparse_embedding entry is not {index, value, token}'],
    ['no usage', JSON.stringify({ output: { embeddings: [item(0), item(1)] }, request_id: 'rid' }), 'usage.total_tokens is missing'],
    ['no output', JSON.stringify({ request_id: 'rid' }), 'output.embeddings is not an array'],
  ])('rejects %s as malformed', (_name, body, reason) => {
    const run = () => decodeNativeResponse(body, expect2);
    expect(run).toThrow(ProviderUnavailableError);
    expect(run).toThrow(`DashScope returned a malformed response: ${reason} (request_id rid)`);
  });

  it('rejects a body that is not JSON', () => {
    expect(() => decodeNativeResponse('<html>', { ...expect2, headerRequestId: 'h1' })).toThrow(
      'DashScope returned a malformed response: body is not JSON (6 chars) (request_id h1)',
    );
  });
});

describe('decodeCompatResponse', () => {
  it('places by index and reads the id', () => {
    const body = JSON.stringify({
      data: [
        { embedding: [1, 2], index: 1, object: 'embedding' },
        { embedding: [3, 4], index: 0, object: 'embedding' },
      ],
      model: 'text-embedding-v4',
      object: 'list',
      usage: { prompt_tokens: 6, total_tokens: 6 },
      id: 'compat-id',
    });
    const result = decodeCompatResponse(body, { ...expect2, sparse: false });
    expect(result).toEqual({ items: [{ dense: new Float32Array([3, 4]), sparse: null }, { dense: new Float32Array([1, 2]), sparse: null }], totalTokens: 6, requestId: 'compat-id' });
  });
});
