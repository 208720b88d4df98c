import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { DashScopeSettings } from '../../src/config.js';
import { createDashScopeClient } from '../../src/dashscope/dashscope-client.js';
import { COMPAT_EMBEDDING_PATH, NATIVE_EMBEDDING_PATH } from '../../src/dashscope/endpoints.js';
import type { EmbeddingClient, EmbeddingParameters, EmbeddingResult } from '../../src/embedding.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import { DEFAULT_FAULTS } from '../../src/emulator/emulator-options.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.js';
import { embeddingParameters } from '../support/embedding-parameters.js';
import { rewriteText, startRewritingProxy } from '../support/rewriting-proxy.js';
import {
  ContentRejectedError,
  type EmbedqError,
  ProviderAccountError,
  ProviderRateLimitedError,
  ProviderUnavailableError,
  RequestInvalidError,
} from '../../src/errors.js';
import { MODELS, type ModelName, OUTPUT_TYPES, textTokenLimit } from '../../src/models.js';
import { loadTokenizer, type Tokenizer } from '../../src/tokens/count-tokens.js';

/**
 * The real client against the real emulator over HTTP: every parameter, every client-side check,
 * every server-side error body, fault injection and rate limits. Expected vectors come from
 * emulatorEmbedding and expected token counts from the tokenizer, so every comparison is exact.
 */

const API_KEY = 'sk-conformance-key';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TEXTS = ['风急天高猿啸哀', 'The wind is sharp, the sky is high, and apes cry mournfully.', 'hello'];

let emulator: RunningEmulator;
let client: EmbeddingClient;
let tokenizer: Tokenizer;
let settings: DashScopeSettings;

beforeAll(async () => {
  emulator = await startEmulator({ port: 0, apiKey: API_KEY, seed: 7 });
  settings = { apiKey: API_KEY, baseUrl: emulator.url, timeoutMs: 5000, targetUtilization: 0.99, reserve: 0, learnedLimitTtlMs: 3_600_000 };
  client = createDashScopeClient(settings);
  tokenizer = await loadTokenizer();
});
afterAll(async () => {
  await client.close();
  await emulator.close();
});
afterEach(() => {
  emulator.setFaults(structuredClone(DEFAULT_FAULTS));
  emulator.setLimits({ qpm: 6000, tpm: 24_000_000 });
  emulator.clearRateWindows();
});

const parameters = embeddingParameters;

/** What the emulator must return, computed independently of the HTTP path. */
function expected(texts: readonly string[], request: EmbeddingParameters): Omit<EmbeddingResult, 'requestId'> {
  const perText = request.model === 'text-embedding-v4' ? 1 : 0;
  return {
    items: texts.map((text) => emulatorEmbedding(text, request)),
    totalTokens: texts.reduce((sum, text) => sum + tokenizer.countTokens(text) + perText, 0),
  };
}

async function expectEmbedding(texts: readonly string[], request: EmbeddingParameters): Promise<EmbeddingResult> {
  const result = await client.embed(texts, request);
  expect({ items: result.items, totalTokens: result.totalTokens }).toEqual(expected(texts, request));
  expect(result.requestId).toMatch(UUID);
  return result;
}

/** The error a call rejects with (fails the test if it resolves). */
async function failure(promise: Promise<unknown>): Promise<EmbedqError> {
  try {
    await promise;
  } catch (error) {
    return error as EmbedqError;
  }
  throw new Error('expected the call to fail');
}

/** POSTs a raw body (for requests the client refuses to send). */
async function post(path: string, body: unknown, key: string | null = API_KEY): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(emulator.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === null ? {} : { authorization: `Bearer ${key}` }) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const json = (await response.json()) as Record<string, unknown>;
  return { status: response.status, json, headers: response.headers };
}

describe('success paths', () => {
  for (const model of ['text-embedding-v4', 'text-embedding-v3'] as ModelName[]) {
    it(`native ${model}: every dimension and output type`, async () => {
      for (const dimension of MODELS[model].dimensions) {
        for (const outputType of OUTPUT_TYPES) {
          const result = await expectEmbedding(TEXTS, parameters({ model, dimension, outputType }));
          expect(result.items[0]!.dense?.length ?? null).toBe(outputType === 'sparse' ? null : dimension);
          expect(result.items[0]!.sparse === null).toBe(outputType === 'dense');
        }
      }
    });

    it(`compatible mode ${model}: every dimension`, async () => {
      for (const dimension of MODELS[model].dimensions) {
        const result = await expectEmbedding(TEXTS, parameters({ model, dimension, outputType: 'dense', api: 'openai' }));
        expect(result.items.every((item) => item.sparse === null && item.dense?.length === dimension)).toBe(true);
      }
    });
  }

  it('applies text_type and instruct (v4, native)', async () => {
    const document = await expectEmbedding(TEXTS, parameters({ outputType: 'dense' }));
    const query = await expectEmbedding(TEXTS, parameters({ outputType: 'dense', textType: 'query' }));
    const instructed = await expectEmbedding(TEXTS, parameters({ outputType: 'dense', textType: 'query', instruct: 'Given a poem line, find its translation' }));
    expect(query.items[0]!.dense).not.toEqual(document.items[0]!.dense);
    expect(instructed.items[0]!.dense).not.toEqual(query.items[0]!.dense);
  });

  it('answers the compatible mode with the documented shape and the same vectors as native dense', async () => {
    const { status, json, headers } = await post(COMPAT_EMBEDDING_PATH, { model: 'text-embedding-v4', input: ['hello', 'world'], dimensions: 64, encoding_format: 'float' });
    expect(status).toBe(200);
    expect(headers.get('content-type')).toBe('application/json');
    expect(json.id).toBe(headers.get('x-request-id'));
    const native = await client.embed(['hello', 'world'], parameters({ dimension: 64, outputType: 'dense' }));
    // Numbers come as 16-decimal text; as float32 they are the emulator's values bit for bit.
    for (const item of json.data as { embedding: number[] | Float32Array }[]) item.embedding = Float32Array.from(item.embedding);
    expect(json).toEqual({
      data: native.items.map((item, index) => ({ embedding: item.dense, index, object: 'embedding' })),
      model: 'text-embedding-v4',
      object: 'list',
      usage: { prompt_tokens: 4, total_tokens: 4 },
      id: json.id,
    });
  });

  it('answers the native endpoint with the documented shape and headers', async () => {
    const { status, json, headers } = await post(NATIVE_EMBEDDING_PATH, {
      model: 'text-embedding-v3',
      input: { texts: ['代码改变世界'] },
      parameters: { dimension: 512, output_type: 'dense&sparse' },
    });
    expect(status).toBe(200);
    const vectors = emulatorEmbedding('代码改变世界', parameters({ model: 'text-embedding-v3', dimension: 512 }));
    const [item] = (json.output as { embeddings: { embedding: number[] | Float32Array }[] }).embeddings;
    item!.embedding = Float32Array.from(item!.embedding);
    expect(json).toEqual({
      output: { embeddings: [{ text_index: 0, embedding: vectors.dense, sparse_embedding: vectors.sparse }] },
      usage: { total_tokens: 3 }, // the Qwen BPE count of the tokenizer API sample; v3 adds nothing
      request_id: headers.get('x-request-id'),
    });
    expect(headers.get('x-request-id')).toMatch(UUID);
    for (const name of ['req-cost-time', 'req-arrive-time', 'resp-start-time']) expect(headers.get(name)).toMatch(/^\d+$/);
    expect(headers.get('retry-after')).toBeNull();
  });

  it('accepts a text over 8,192 bytes that is within 8,192 tokens', async () => {
    const long = 'hello world '.repeat(1000); // 12,000 bytes, 2,000 tokens
    await expectEmbedding([long], parameters({ outputType: 'dense', dimension: 64 }));
  });

  it('returns items in input order when the server shuffles text_index', async () => {
    emulator.setFaults({ shuffleRate: 1 });
    const texts = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'];
    const { json } = await post(NATIVE_EMBEDDING_PATH, { model: 'text-embedding-v4', input: { texts }, parameters: { dimension: 64 } });
    const order = (json.output as { embeddings: { text_index: number }[] }).embeddings.map((item) => item.text_index);
    expect(order).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect([...order].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await expectEmbedding(texts, parameters());
    const compat = await post(COMPAT_EMBEDDING_PATH, { model: 'text-embedding-v4', input: texts, dimensions: 64 });
    expect((compat.json.data as { index: number }[]).map((item) => item.index)).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await expectEmbedding(texts, parameters({ api: 'openai', outputType: 'dense' }));
  });
});

describe('client-side validation (nothing is sent)', () => {
  it.each<[string, string[], Partial<EmbeddingParameters>, string]>([
    ['11 texts', Array.from({ length: 11 }, (_, index) => `t${index}`), {}, 'text-embedding-v4 takes 1 to 10 texts per request, got 11'],
    ['no texts', [], {}, 'text-embedding-v4 takes 1 to 10 texts per request, got 0'],
    ['a blank text', ['fine', ' \t\n'], {}, 'text 1 is empty or whitespace only; DashScope rejects blank texts'],
    ['an empty text', [''], {}, 'text 0 is empty or whitespace only; DashScope rejects blank texts'],
    ['a bad dimension for v3', ['x'], { model: 'text-embedding-v3', dimension: 2048 }, 'dimension 2048 is not offered by text-embedding-v3; choose one of 1024, 768, 512'],
    ['a bad dimension for v4', ['x'], { dimension: 3072 }, 'dimension 3072 is not offered by text-embedding-v4'],
    ['instruct on v3', ['x'], { model: 'text-embedding-v3', instruct: 'Find' }, 'instruct is supported by text-embedding-v4 only, not text-embedding-v3'],
    ['instruct on the compatible mode', ['x'], { api: 'openai', outputType: 'dense', instruct: 'Find' }, 'instruct needs the native DashScope API (--api dashscope)'],
    ['sparse on the compatible mode', ['x'], { api: 'openai', outputType: 'sparse' }, 'output type sparse needs the native DashScope API'],
    ['dense&sparse on the compatible mode', ['x'], { api: 'openai' }, 'output type dense&sparse needs the native DashScope API'],
    ['query on the compatible mode', ['x'], { api: 'openai', outputType: 'dense', textType: 'query' }, 'text type query needs the native DashScope API'],
    ['an over-long text', ['ok', '9 '.repeat(4100)], {}, 'text 1 has 8200 tokens; text-embedding-v4 takes at most 8191 per text (8192 with the 1 it adds)'],
  ])('refuses %s', async (_name, texts, overrides, message) => {
    const before = emulator.stats().requests;
    const error = await failure(client.embed(texts, parameters(overrides)));
    expect(error).toBeInstanceOf(RequestInvalidError);
    expect(error.message).toContain(message);
    expect(emulator.stats().requests).toBe(before);
  });
});

describe('server-side error bodies', () => {
  const ALGO = '<400> InternalError.Algo.InvalidParameter: ';
  const native = (body: Record<string, unknown>) => ({ model: 'text-embedding-v4', input: { texts: ['x'] }, parameters: { dimension: 64 }, ...body });
  const compat = (body: Record<string, unknown>) => ({ model: 'text-embedding-v4', input: ['x'], dimensions: 64, ...body });
  const nativeError = (code: string, message: string) => ({ code, message });
  const compatError = (code: string | null, type: string, message: string) => ({ error: { message, type, param: null, code } });

  it.each<[string, string, unknown, number, Record<string, unknown>, (string | null)?]>([
    ['11 texts (native)', NATIVE_EMBEDDING_PATH, native({ input: { texts: Array(11).fill('x') } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, batch size is invalid, it should not be larger than 10.: input.contents`)],
    ['11 texts (compat)', COMPAT_EMBEDDING_PATH, compat({ input: Array(11).fill('x') }), 400, compatError('InvalidParameter', 'InvalidParameter', `${ALGO}Value error, batch size is invalid, it should not be larger than 10.: input.contents`)],
    ['blank text', NATIVE_EMBEDDING_PATH, native({ input: { texts: ['x', '  '] } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, contents should not be empty or only whitespace.: input.contents`)],
    ['texts not strings', NATIVE_EMBEDDING_PATH, native({ input: { texts: [1, 2] } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, contents is neither str nor list of str.: input.contents`)],
    ['token ids (compat)', COMPAT_EMBEDDING_PATH, compat({ input: [[1, 2]] }), 400, compatError('InvalidParameter', 'InvalidParameter', `${ALGO}Value error, contents is neither str nor list of str.: input.contents`)],
    ['bad dimension v3', NATIVE_EMBEDDING_PATH, native({ model: 'text-embedding-v3', parameters: { dimension: 2048 } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, dimension for embedding v3 is invalid, its value shold be in [512, 768, 1024]`)],
    ['bad dimension v4 (compat)', COMPAT_EMBEDDING_PATH, compat({ dimensions: 100 }), 400, compatError('InvalidParameter', 'InvalidParameter', `${ALGO}Value error, dimension for embedding v4 is invalid, its value shold be in [64, 128, 256, 512, 768, 1024, 1536, 2048]`)],
    ['bad output_type', NATIVE_EMBEDDING_PATH, native({ parameters: { output_type: 'both' } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, output_type is invalid, it should be one of [dense, sparse, dense&sparse].: parameters.output_type`)],
    ['bad text_type', NATIVE_EMBEDDING_PATH, native({ parameters: { text_type: 'passage' } }), 400, nativeError('InvalidParameter', `${ALGO}Value error, text_type is invalid, it should be one of [query, document].: parameters.text_type`)],
    ['sparse on compat', COMPAT_EMBEDDING_PATH, compat({ output_type: 'sparse' }), 400, compatError('InvalidParameter', 'InvalidParameter', `${ALGO}Value error, output_type sparse is not supported in OpenAI compatible mode, use the DashScope API.: output_type`)],
    ['over 8,192 tokens (native)', NATIVE_EMBEDDING_PATH, native({ input: { texts: ['9 '.repeat(4100)] } }), 400, nativeError('InvalidParameter', `${ALGO}Range of input length should be [1, 8192]`)],
    ['over 8,192 tokens (compat)', COMPAT_EMBEDDING_PATH, compat({ input: ['9 '.repeat(4100)] }), 400, compatError('invalid_parameter_error', 'invalid_request_error', `${ALGO}Range of input length should be [1, 8192]`)],
    ['missing model (native)', NATIVE_EMBEDDING_PATH, { input: { texts: ['x'] } }, 400, nativeError('BadRequest.EmptyModel', 'Required parameter "model" missing from request.')],
    ['missing model (compat)', COMPAT_EMBEDDING_PATH, { input: ['x'] }, 400, compatError(null, 'invalid_request_error', 'you must provide a model parameter.')],
    ['missing input', NATIVE_EMBEDDING_PATH, { model: 'text-embedding-v4' }, 400, nativeError('BadRequest.EmptyInput', 'Required input parameter missing from request.')],
    ['body not JSON (native)', NATIVE_EMBEDDING_PATH, '{"model":', 400, nativeError('InvalidParameter', 'Required body invalid, please check the request body format.')],
    ['body not JSON (compat)', COMPAT_EMBEDDING_PATH, 'nope', 400, compatError('invalid_request_error', 'invalid_request_error', 'The input parameter requires json format.')],
    ['unknown model (native)', NATIVE_EMBEDDING_PATH, native({ model: 'text-embedding-v9' }), 404, nativeError('ModelNotFound', 'Model can not be found.')],
    ['unknown model (compat)', COMPAT_EMBEDDING_PATH, compat({ model: 'text-embedding-v9' }), 404, compatError('model_not_found', 'invalid_request_error', 'The model `text-embedding-v9` does not exist or you do not have access to it.')],
    ['moderation (native)', NATIVE_EMBEDDING_PATH, native({ input: { texts: ['fine', 'EMBEDQ_BLOCKED here'] } }), 400, nativeError('DataInspectionFailed', 'Input or output data may contain inappropriate content.')],
    ['moderation (compat)', COMPAT_EMBEDDING_PATH, compat({ input: ['EMBEDQ_BLOCKED'] }), 400, compatError('data_inspection_failed', 'data_inspection_failed', 'Input data may contain inappropriate content.')],
    ['no key (native)', NATIVE_EMBEDDING_PATH, native({}), 401, nativeError('InvalidApiKey', 'Invalid API-key provided.'), null],
    ['wrong key (compat)', COMPAT_EMBEDDING_PATH, compat({}), 401, compatError('invalid_api_key', 'invalid_request_error', 'Incorrect API key provided. '), 'sk-wrong'],
  ])('%s', async (_name, path, body, status, expectedBody, key = API_KEY) => {
    const before = emulator.stats().accepted;
    const response = await post(path, body, key);
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toBe('application/json');
    const requestId = response.headers.get('x-request-id');
    expect(requestId).toMatch(UUID);
    const ids = path === NATIVE_EMBEDDING_PATH ? { request_id: requestId } : { id: requestId, request_id: requestId };
    expect(response.json).toEqual({ ...expectedBody, ...ids });
    expect(emulator.stats().accepted).toBe(before);
  });

  // Under the compatible-mode path, in its envelope (facts §1a): they were native bodies there.
  it.each<[string, string, string]>([
    ['PUT', NATIVE_EMBEDDING_PATH, 'code'],
    ['PUT', COMPAT_EMBEDDING_PATH, 'error'],
    ['GET', '/compatible-mode/v1/models', 'error'],
    ['GET', '/api/v1/models', 'code'],
  ])('%s %s: an error in that API\'s envelope', async (method, path, field) => {
    const response = await fetch(emulator.url + path, { method });
    expect(response.status).toBe(method === 'PUT' ? 405 : 404);
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body)).toContain(field);
    expect(Object.keys(body)).not.toContain(field === 'code' ? 'error' : 'code');
  });
});

describe('the row limit at its edge (the emulator counts v4\'s added end token, the strict reading)', () => {
  it('takes 8,191 BPE tokens on v4 and 8,192 on v3, refuses one more; the client cuts long lines to fit', async () => {
    const tokenizer = await loadTokenizer();
    const ofTokens = (count: number): string => tokenizer.truncateToTokens('9 '.repeat(5_000), count);
    expect(tokenizer.countTokens(ofTokens(8_191))).toBe(8_191);
    const send = (model: string, text: string) => post(NATIVE_EMBEDDING_PATH, { model, input: { texts: [text] }, parameters: { dimension: model === 'text-embedding-v3' ? 512 : 64 } }, API_KEY);
    const v4 = await send('text-embedding-v4', ofTokens(8_191));
    expect(v4.status).toBe(200);
    expect((v4.json as { usage: { total_tokens: number } }).usage.total_tokens).toBe(8_192);
    expect((await send('text-embedding-v4', ofTokens(8_192))).status).toBe(400);
    expect((await send('text-embedding-v3', ofTokens(8_192))).status).toBe(200);
    expect((await send('text-embedding-v3', ofTokens(8_193))).status).toBe(400);
    expect([textTokenLimit('text-embedding-v4'), textTokenLimit('text-embedding-v3')]).toEqual([8_191, 8_192]);
  });
});

describe('server-side errors through the client', () => {
  for (const api of ['dashscope', 'openai'] as const) {
    const request = parameters({ api, outputType: 'dense', dimension: 64 });

    it(`${api}: a wrong key is an account error`, async () => {
      const wrong = createDashScopeClient({ ...settings, apiKey: 'sk-not-this-one' });
      const error = await failure(wrong.embed(['x'], request));
      expect(error).toBeInstanceOf(ProviderAccountError);
      expect((error as ProviderAccountError).failure).toMatchObject({ status: 401, providerCode: api === 'dashscope' ? 'InvalidApiKey' : 'invalid_api_key' });
      expect(error.message).not.toContain('sk-not-this-one');
      expect(error.message).toMatch(/request_id [0-9a-f-]{36}/);
    });

    it(`${api}: moderation is a content rejection`, async () => {
      const error = await failure(client.embed(['fine', 'has EMBEDQ_BLOCKED inside'], request));
      expect(error.constructor).toBe(ContentRejectedError);
      expect(error.code).toBe('CONTENT_REJECTED');
    });

    it(`${api}: each injected 429 kind is rate limiting of that kind`, async () => {
      for (const [kind, code] of [
        ['requests', api === 'dashscope' ? 'Throttling.RateQuota' : 'limit_requests'],
        ['tokens', api === 'dashscope' ? 'Throttling.AllocationQuota' : 'insufficient_quota'],
        ['burst', api === 'dashscope' ? 'Throttling.BurstRate' : 'limit_burst_rate'],
      ] as const) {
        emulator.setFaults({ failRate429: { requests: 0, tokens: 0, burst: 0, [kind]: 1 } });
        const error = await failure(client.embed(['x'], request));
        expect(error).toBeInstanceOf(ProviderRateLimitedError);
        expect((error as ProviderRateLimitedError).kind).toBe(kind);
        expect((error as ProviderRateLimitedError).failure.providerCode).toBe(code);
        expect((error as ProviderRateLimitedError).retryAfterMs).toBeUndefined();
      }
      emulator.setFaults({ failRate429: { requests: 1, tokens: 0, burst: 0 }, retryAfterSeconds: 3 });
      const error = await failure(client.embed(['x'], request));
      expect((error as ProviderRateLimitedError).retryAfterMs).toBe(3000);
    });

    it(`${api}: an injected 500 is unavailability`, async () => {
      emulator.setFaults({ failRate500: 1 });
      const error = await failure(client.embed(['x'], request));
      expect(error.constructor).toBe(ProviderUnavailableError);
      expect((error as ProviderUnavailableError).failure).toMatchObject({ status: 500, providerCode: api === 'dashscope' ? 'InternalError' : 'internal_error' });
    });
  }

  it('a dropped connection is unavailability with the cause attached', async () => {
    emulator.setFaults({ dropRate: 1 });
    const before = emulator.stats().dropped;
    const error = await failure(client.embed(['x'], parameters()));
    expect(error.constructor).toBe(ProviderUnavailableError);
    expect(error.message).toMatch(/^DashScope (request|response body) failed: /);
    expect(error.cause).toBeInstanceOf(Error);
    expect(emulator.stats().dropped).toBe(before + 1);
  });

  it('a slow response times out as unavailability', async () => {
    emulator.setFaults({ slowRate: 1, slowMs: 3000 });
    const impatient = createDashScopeClient({ ...settings, timeoutMs: 200 });
    const started = performance.now();
    const error = await failure(impatient.embed(['x'], parameters()));
    expect(performance.now() - started).toBeLessThan(1500);
    expect(error.constructor).toBe(ProviderUnavailableError);
    expect(error.message).toBe('DashScope request timed out after 200 ms');
  });

  it("the caller's abort is rethrown as the caller's reason", async () => {
    emulator.setFaults({ slowRate: 1, slowMs: 3000 });
    const reason = new Error('worker shutting down');
    const error = await failure(client.embed(['x'], parameters(), { signal: abortAfter(100, reason) }));
    expect(error).toBe(reason);
  });
});

/** A proxy in front of the emulator that compresses every answer with `encoding`, as DashScope's gateway does (gzip). */
function compressingProxy(encoding: 'gzip' | 'deflate' | 'deflate-raw' | 'br'): ReturnType<typeof startRewritingProxy> {
  const compress = { gzip: gzipSync, deflate: deflateSync, 'deflate-raw': deflateRawSync, br: brotliCompressSync }[encoding];
  return startRewritingProxy(emulator.url, (body) => ({ body: compress(body), headers: { 'content-encoding': encoding === 'deflate-raw' ? 'deflate' : encoding } }));
}

describe('HTTP transport', () => {
  for (const encoding of ['gzip', 'deflate', 'deflate-raw', 'br'] as const) {
    it(`asks for compression and decodes a ${encoding} answer to the same result`, async () => {
      const proxy = await compressingProxy(encoding);
      const viaProxy = createDashScopeClient({ ...settings, baseUrl: proxy.url });
      try {
        const request = parameters();
        const result = await viaProxy.embed(TEXTS, request);
        expect({ items: result.items, totalTokens: result.totalTokens }).toEqual(expected(TEXTS, request));
        expect(proxy.seen[0]?.['accept-encoding']).toMatch(/gzip/);
        // Errors are decoded too: a compressed 401 is still an account error naming the provider's code.
        const error = await failure(createDashScopeClient({ ...settings, baseUrl: proxy.url, apiKey: 'sk-wrong' }).embed(['x'], request));
        expect(error).toBeInstanceOf(ProviderAccountError);
        expect((error as ProviderAccountError).failure.providerCode).toBe('InvalidApiKey');
      } finally {
        await viaProxy.close();
        await proxy.close();
      }
    });
  }

  it("a caller's signal that already fired sends nothing", async () => {
    emulator.resetStats();
    const reason = new Error('stopped before sending');
    const controller = new AbortController();
    controller.abort(reason);
    expect(await failure(client.embed(['x'], parameters(), { signal: controller.signal }))).toBe(reason);
    expect(emulator.stats().requests).toBe(0);
  });

  it('a timeout while the body arrives is unavailability, and the client goes on serving', async () => {
    const impatient = createDashScopeClient({ ...settings, timeoutMs: 300 });
    try {
      emulator.setFaults({ slowRate: 1, slowMs: 2000 });
      const error = await failure(impatient.embed(['x'], parameters()));
      expect(error.constructor).toBe(ProviderUnavailableError);
      expect(error.message).toMatch(/^DashScope (request|response body) timed out after 300 ms$/);
      emulator.setFaults(structuredClone(DEFAULT_FAULTS));
      await expect(impatient.embed(['x'], parameters())).resolves.toMatchObject({ totalTokens: expect.any(Number) });
    } finally {
      await impatient.close();
    }
  });
});

describe('answers a broken proxy or a wrong base URL gives', () => {
  for (const api of ['dashscope', 'openai'] as const) {
    it(`${api}: a redirect fails as configuration at once, naming where it points; it is not followed`, async () => {
      const requests: string[] = [];
      const server: Server = createServer((incoming, outgoing) => {
        requests.push(`${incoming.method} ${incoming.url}`);
        incoming.resume();
        outgoing.writeHead(301, { location: `https://dashscope-intl.aliyuncs.com${incoming.url}`, 'content-length': '0' });
        outgoing.end();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const redirected = createDashScopeClient({ ...settings, baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
      try {
        const error = await failure(redirected.embed(['x'], parameters({ api, outputType: 'dense' })));
        expect(error).toBeInstanceOf(ProviderAccountError);
        expect(error.retryable).toBe(false);
        expect(error.message).toMatch(/HTTP 301: \(empty body\) — a configuration problem: check DASHSCOPE_BASE_URL; it redirects to https:\/\/dashscope-intl\.aliyuncs\.com\/(api\/v1|compatible-mode\/v1)\//);
        expect(requests).toHaveLength(1);
      } finally {
        await redirected.close();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it(`${api}: a value beyond float32 is a malformed (retryable) answer, never an Infinity in the result; the next answer is taken`, async () => {
      for (const beyond of ['1e39', '1e400']) {
        // The first answer's first vector value is replaced; later answers pass unchanged.
        const proxy = await startRewritingProxy(emulator.url, rewriteText((body, index) => (index === 0 ? body.replace(/("embedding":\[)[^,]+/, `$1${beyond}`) : body)));
        const viaProxy = createDashScopeClient({ ...settings, baseUrl: proxy.url });
        try {
          const request = parameters({ api, outputType: 'dense' });
          const error = await failure(viaProxy.embed(TEXTS, request));
          expect(error.constructor).toBe(ProviderUnavailableError);
          expect(error.retryable).toBe(true);
          expect(error.message).toMatch(/^DashScope returned a malformed response: embedding holds (1e\+39|Infinity), beyond float32 \(request_id /);
          const retried = await viaProxy.embed(TEXTS, request);
          expect({ items: retried.items, totalTokens: retried.totalTokens }).toEqual(expected(TEXTS, request));
        } finally {
          await viaProxy.close();
          await proxy.close();
        }
      }
    });
  }

  it('a sparse index outside int32 or a bogus token count is a malformed answer', async () => {
    const rewrites: Array<[(body: string) => string, RegExp]> = [
      [(body) => body.replace(/"index":\d+/, `"index":${2 ** 32 + 3}`), /sparse_embedding index 4294967299 is not an integer in 0\.\.2147483647/],
      [(body) => body.replace(/"index":\d+/, '"index":-5'), /sparse_embedding index -5 is not an integer/],
      [(body) => body.replace(/"total_tokens":\d+/, '"total_tokens":1000000000000'), /usage\.total_tokens 1000000000000 is more than 3 texts can use \(at most 49152\)/],
    ];
    for (const [rewrite, reason] of rewrites) {
      const proxy = await startRewritingProxy(emulator.url, rewriteText(rewrite));
      const viaProxy = createDashScopeClient({ ...settings, baseUrl: proxy.url });
      try {
        const error = await failure(viaProxy.embed(TEXTS, parameters({ outputType: 'dense&sparse' })));
        expect(error.constructor).toBe(ProviderUnavailableError);
        expect(error.message).toMatch(reason);
      } finally {
        await viaProxy.close();
        await proxy.close();
      }
    }
  });
});

function abortAfter(milliseconds: number, reason: Error): AbortSignal {
  const controller = new AbortController();
  setTimeout(() => controller.abort(reason), milliseconds);
  return controller.signal;
}

describe('rate limits', () => {
  it('allows QPM/60 requests in any second and answers 429 RateQuota past it', async () => {
    emulator.setLimits({ qpm: 600, tpm: 0 }); // 10 per second
    emulator.resetStats();
    const results = await Promise.allSettled(Array.from({ length: 15 }, () => client.embed(['x'], parameters({ dimension: 64, outputType: 'dense' }))));
    const rejected = results.filter((result) => result.status === 'rejected').map((result) => (result as PromiseRejectedResult).reason as ProviderRateLimitedError);
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(10);
    expect(rejected).toHaveLength(5);
    expect(rejected.every((error) => error instanceof ProviderRateLimitedError && error.kind === 'requests')).toBe(true);
    const stats = emulator.stats();
    expect(stats.maxRequestsPerSecond).toBe(10);
    expect(stats.byStatus).toEqual({ 200: 10, 429: 5 });
    expect(stats.byCode).toEqual({ 'Throttling.RateQuota': 5 });
    expect(stats.limits).toEqual({ requestsPerMinute: 600, tokensPerMinute: null, requestsPerSecond: 10, tokensPerSecond: null });
    await new Promise((resolve) => setTimeout(resolve, 1050));
    await expect(client.embed(['x'], parameters({ dimension: 64, outputType: 'dense' }))).resolves.toBeDefined();
  });

  it('allows TPM/60 tokens in any second and answers 429 AllocationQuota past it; rejections consume nothing', async () => {
    emulator.setLimits({ qpm: 0, tpm: 6000 }); // 100 tokens per second
    const v3 = parameters({ model: 'text-embedding-v3', dimension: 512, outputType: 'dense' });
    const sixty = '9'.repeat(60); // one token per digit
    expect(tokenizer.countTokens(sixty)).toBe(60);
    expect((await client.embed([sixty], v3)).totalTokens).toBe(60);
    const error = await failure(client.embed(['9'.repeat(50)], v3));
    expect(error).toBeInstanceOf(ProviderRateLimitedError);
    expect((error as ProviderRateLimitedError).kind).toBe('tokens');
    expect((error as ProviderRateLimitedError).failure.providerCode).toBe('Throttling.AllocationQuota');
    expect((await client.embed(['9'.repeat(40)], v3)).totalTokens).toBe(40); // exactly 100 in the second
    expect(((await failure(client.embed(['9'], v3))) as ProviderRateLimitedError).kind).toBe('tokens');
  });
});

describe('control endpoints', () => {
  it('serves the same stats over HTTP and counts exactly', async () => {
    emulator.resetStats();
    await client.embed(['a', 'b'], parameters({ model: 'text-embedding-v3', dimension: 512, outputType: 'dense' }));
    await failure(client.embed(['EMBEDQ_BLOCKED'], parameters()));
    const overHttp = (await (await fetch(`${emulator.url}/emulator/stats`)).json()) as ReturnType<RunningEmulator['stats']>;
    const inProcess = emulator.stats();
    expect(overHttp).toEqual(inProcess);
    expect(inProcess).toMatchObject({
      requests: 2,
      accepted: 1,
      rows: 2,
      tokens: 2,
      dropped: 0,
      byStatus: { 200: 1, 400: 1 },
      byCode: { DataInspectionFailed: 1 },
      maxRequestsPerSecond: 1,
      maxTokensPerSecond: 2,
      models: { 'text-embedding-v3': { accepted: 1, rows: 2, tokens: 2, maxRequestsPerSecond: 1, maxTokensPerSecond: 2 } },
    });
    expect(inProcess.history.reduce((sum, second) => sum + second.requests, 0)).toBe(2);
    expect(inProcess.history.reduce((sum, second) => sum + second.accepted, 0)).toBe(1);
    const reset = (await (await fetch(`${emulator.url}/emulator/stats/reset`, { method: 'POST' })).json()) as { requests: number };
    expect(reset.requests).toBe(0);
  });

  it('sets faults over HTTP and rejects bad ones', async () => {
    const good = await fetch(`${emulator.url}/emulator/faults`, { method: 'POST', body: JSON.stringify({ failRate500: 1 }) });
    expect(good.status).toBe(200);
    expect(((await good.json()) as { failRate500: number }).failRate500).toBe(1);
    expect(emulator.faults().failRate500).toBe(1);
    expect((await failure(client.embed(['x'], parameters()))).constructor).toBe(ProviderUnavailableError);
    const bad = await fetch(`${emulator.url}/emulator/faults`, { method: 'POST', body: JSON.stringify({ failRate500: 7 }) });
    expect(bad.status).toBe(400);
    expect(emulator.faults().failRate500).toBe(1);
  });

  it('reuses keep-alive connections', async () => {
    emulator.resetStats();
    for (let round = 0; round < 20; round++) await client.embed(['x'], parameters());
    const stats = emulator.stats();
    expect(stats.requests).toBe(20);
    expect(stats.connections).toBeLessThanOrEqual(1); // 0 when the previous test's connection is still open
  });

  it('answers unknown paths with 404', async () => {
    const response = await fetch(`${emulator.url}/api/v1/nothing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: 'NotFound' });
  });
});
