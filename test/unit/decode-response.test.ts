import { describe, expect, it } from 'vitest';

import { decodeCompatResponse, decodeNativeResponse, type DecodeExpectation } from '../../src/dashscope/decode-response.js';
import { ProviderUnavailableError } from '../../src/errors.js';

const expect2: DecodeExpectation = { count: 2, maxTotalTokens: 100, dimension: 2, dense: true, sparse: true };
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
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
    ['a sparse index past int32 (it would wrap in the shard)', nativeBody([item(0), item(1, [1, 2], [{ index: 2 ** 32 + 3, value: 0.1, token: 't' }])]), 'sparse_embedding index 4294967299 is not an integer in 0..2147483647'],
    ['a sparse index of 2^31', nativeBody([item(0), item(1, [1, 2], [{ index: 2 ** 31, value: 0.1, token: 't' }])]), 'sparse_embedding index 2147483648 is not an integer in 0..2147483647'],
    ['a negative sparse index', nativeBody([item(0), item(1, [1, 2], [{ index: -5, value: 0.1, token: 't' }])]), 'sparse_embedding index -5 is not an integer in 0..2147483647'],
    ['a fractional sparse index', nativeBody([item(0), item(1, [1, 2], [{ index: 1.5, value: 0.1, token: 't' }])]), 'sparse_embedding index 1.5 is not an integer in 0..2147483647'],
    ['a sparse value beyond float32', nativeBody([item(0), item(1, [1, 2], [{ index: 1, value: 1e39, token: 't' }])]), 'sparse_embedding value 1e+39 is beyond float32'],
    ['a dense value beyond float32', nativeBody([item(0), item(1, [1e39, 2])]), 'embedding holds 1e+39, beyond float32'],
    ['more tokens than the texts can use', nativeBody([item(0), item(1)], { usage: { total_tokens: 1e12 } }), 'usage.total_tokens 1000000000000 is more than 2 texts can use (at most 100)'],
    ['no usage', JSON.stringify({ output: { embeddings: [item(0), item(1)] }, request_id: 'rid' }), 'usage.total_tokens is missing'],
    ['no output', JSON.stringify({ request_id: 'rid' }), 'output.embeddings is not an array'],
    // The provider's own reason, which the message dropped.
    ['a 200 carrying an error', JSON.stringify({ code: 'InternalError', message: 'An internal error has occured.', request_id: 'rid' }), 'output.embeddings is not an array; the body carries an error: InternalError: An internal error has occured.'],
  ])('rejects %s as malformed', (_name, body, reason) => {
    const run = () => decodeNativeResponse(body, expect2);
    expect(run).toThrow(ProviderUnavailableError);
    expect(run).toThrow(`DashScope returned a malformed response: ${reason} (request_id rid)`);
  });

  it('rejects a value beyond float32 read from bytes too (the byte parser gives up on it), where JSON would make it Infinity', () => {
    for (const [value, shown] of [['1e39', '1e+39'], ['-1e400', '-Infinity'], ['3.4028236e38', '3.4028236e+38'], ['1000000000000000000000000000000000000000.5', '1e+39']]) {
      const body = nativeBody([item(0, [0.5, 0.5]), item(1, [0.25, 0.5])]).replace('[0.25,', `[${value},`);
      expect(() => decodeNativeResponse(bytes(body), expect2), value).toThrow(`malformed response: embedding holds ${shown}, beyond float32 (request_id rid)`);
    }
    const sparse = nativeBody([item(0), item(1)]).replace('"value":0.1', '"value":1e400');
    expect(() => decodeNativeResponse(bytes(sparse), expect2)).toThrow('malformed response: sparse_embedding value Infinity is beyond float32');
    // The largest float32, and a double just under the midpoint above it, still fit.
    const edge = nativeBody([item(0, [0.5, 0.5]), item(1, [0.25, 0.5])]).replace('[0.25,', `[3.4028235677973362e38,`);
    expect(decodeNativeResponse(bytes(edge), expect2).items[1]!.dense![0]).toBe(Math.fround(3.4028234663852886e38));
  });

  it('accepts usage.total_tokens up to the bound', () => {
    expect(decodeNativeResponse(nativeBody([item(0), item(1)], { usage: { total_tokens: 100 } }), expect2).totalTokens).toBe(100);
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

  it('rejects a value beyond float32 and a bogus token count as malformed', () => {
    const body = (first: string, totalTokens = 6): string =>
      `{"data":[{"embedding":[${first},2],"index":0,"object":"embedding"},{"embedding":[3,4],"index":1,"object":"embedding"}],"model":"text-embedding-v4","object":"list","usage":{"prompt_tokens":6,"total_tokens":${totalTokens}},"id":"compat-id"}`;
    const compat = { ...expect2, sparse: false };
    for (const decoded of [body('1e39'), bytes(body('1e39'))]) {
      expect(() => decodeCompatResponse(decoded, compat)).toThrow('malformed response: embedding holds 1e+39, beyond float32 (request_id compat-id)');
    }
    expect(() => decodeCompatResponse(bytes(body('1e400')), compat)).toThrow('embedding holds Infinity, beyond float32');
    expect(() => decodeCompatResponse(bytes(body('1', 101)), compat)).toThrow('usage.total_tokens 101 is more than 2 texts can use (at most 100)');
    const carried = JSON.stringify({ error: { message: 'Requests rate limit exceeded.', type: 'limit_requests', code: 'limit_requests' }, id: 'compat-id' });
    expect(() => decodeCompatResponse(carried, compat)).toThrow('malformed response: data is not an array; the body carries an error: limit_requests: Requests rate limit exceeded. (request_id compat-id)');
  });
});
