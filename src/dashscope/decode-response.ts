import type { EmbeddingItem, EmbeddingResult, SparseEntry } from '../embedding.js';
import { ProviderUnavailableError } from '../errors.js';
import { parseJsonBytes } from './parse-json-bytes.js';

/** Arrays read straight into Float32Array by the byte parser. */
const FLOAT32_KEYS: ReadonlySet<string> = new Set(['embedding']);
/** Lists of `{index, value, token}` read by the byte parser, values already rounded to float32. */
const SPARSE_KEYS: ReadonlySet<string> = new Set(['sparse_embedding']);
/** Sparse indices are stored in an int32 column (shards/batch-codec.ts); a larger one would wrap. */
const MAX_SPARSE_INDEX = 2 ** 31 - 1;

/** What the request asked for, so the response can be checked against it. */
export interface DecodeExpectation {
  /** Number of texts sent; every index 0..count-1 must come back exactly once. */
  count: number;
  /** The most `usage.total_tokens` the texts sent could use; more is a bogus count, not a bill. */
  maxTotalTokens: number;
  dimension: number;
  dense: boolean;
  sparse: boolean;
  /** `x-request-id`, used when the body carries no id. */
  headerRequestId?: string | undefined;
}

/**
 * Decodes a native success body: `{output:{embeddings:[{text_index, embedding, sparse_embedding}]},
 * usage:{total_tokens}, request_id}`. Items are placed by `text_index`, never by array order.
 *
 * The body may be the raw bytes: then `parseJsonBytes` reads the vectors straight into
 * Float32Arrays (at dimension 1024 with sparse a 10-text body is ~250 KB, and TextDecoder plus
 * JSON.parse cost more than the rest of a worker's work on it); a string goes through JSON.parse.
 * Throws ProviderUnavailableError ("malformed response") on anything unexpected: a server that
 * answers 200 with a broken body is a transient fault as far as we can tell.
 */
export function decodeNativeResponse(body: string | Uint8Array, expect: DecodeExpectation): EmbeddingResult {
  const json = parseJson(body, expect);
  const output = field(json, 'output');
  const embeddings = output && typeof output === 'object' ? (output as Record<string, unknown>).embeddings : undefined;
  if (!Array.isArray(embeddings)) throw malformed(`output.embeddings is not an array${carriedError(json)}`, json, expect);
  const items = placeItems(embeddings, 'text_index', expect, json, (entry) => ({
    dense: expect.dense ? toDense(entry.embedding, expect, json) : null,
    sparse: expect.sparse ? toSparse(entry.sparse_embedding, json, expect) : null,
  }));
  return { items, totalTokens: totalTokens(json, expect), requestId: requestId(json, ['request_id'], expect) };
}

/**
 * Decodes an OpenAI-compatible success body: `{data:[{embedding, index, object}], model, object,
 * usage:{prompt_tokens, total_tokens}, id}`. Dense only; placed by `index`.
 */
export function decodeCompatResponse(body: string | Uint8Array, expect: DecodeExpectation): EmbeddingResult {
  const json = parseJson(body, expect);
  const data = field(json, 'data');
  if (!Array.isArray(data)) throw malformed(`data is not an array${carriedError(json)}`, json, expect);
  const items = placeItems(data, 'index', expect, json, (entry) => ({
    dense: toDense(entry.embedding, expect, json),
    sparse: null,
  }));
  return { items, totalTokens: totalTokens(json, expect), requestId: requestId(json, ['request_id', 'id'], expect) };
}

function placeItems(
  entries: unknown[],
  indexField: 'text_index' | 'index',
  expect: DecodeExpectation,
  json: unknown,
  decode: (entry: Record<string, unknown>) => EmbeddingItem,
): EmbeddingItem[] {
  if (entries.length !== expect.count) {
    throw malformed(`${entries.length} embeddings for ${expect.count} texts`, json, expect);
  }
  const items = new Array<EmbeddingItem | undefined>(expect.count);
  for (const entry of entries) {
    if (!entry || typeof entry !== 'object') throw malformed('an embedding entry is not an object', json, expect);
    const record = entry as Record<string, unknown>;
    const index = record[indexField];
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= expect.count) {
      throw malformed(`${indexField} ${JSON.stringify(index)} is outside 0..${expect.count - 1}`, json, expect);
    }
    if (items[index] !== undefined) throw malformed(`${indexField} ${index} appears twice`, json, expect);
    items[index] = decode(record);
  }
  // Every slot is filled: count entries went into count distinct slots.
  return items as EmbeddingItem[];
}

function toDense(value: unknown, expect: DecodeExpectation, json: unknown): Float32Array {
  // From the byte parser: every value is finite (it gives up on a vector with one beyond float32,
  // and the body comes here again through JSON.parse), so no pass over the vector is needed.
  if (value instanceof Float32Array) {
    if (value.length !== expect.dimension) {
      throw malformed(`embedding has ${value.length} values, expected dimension ${expect.dimension}`, json, expect);
    }
    return value;
  }
  if (!Array.isArray(value)) throw malformed('embedding is missing or not an array', json, expect);
  if (value.length !== expect.dimension) {
    throw malformed(`embedding has ${value.length} values, expected dimension ${expect.dimension}`, json, expect);
  }
  const vector = new Float32Array(value.length);
  for (let index = 0; index < value.length; index++) {
    const number = value[index] as unknown;
    if (typeof number !== 'number') throw malformed('embedding holds a non-number', json, expect);
    const rounded = Math.fround(number);
    // Stored, it would be Infinity: a broken vector, not one to write.
    if (!Number.isFinite(rounded)) throw malformed(`embedding holds ${number}, beyond float32`, json, expect);
    vector[index] = rounded;
  }
  return vector;
}

function toSparse(value: unknown, json: unknown, expect: DecodeExpectation): SparseEntry[] {
  if (!Array.isArray(value)) throw malformed('sparse_embedding is missing or not an array', json, expect);
  const entries: SparseEntry[] = new Array<SparseEntry>(value.length);
  for (let position = 0; position < value.length; position++) {
    const entry = value[position] as Record<string, unknown> | null;
    const index = entry?.index;
    const weight = entry?.value;
    const token = entry?.token;
    if (typeof index !== 'number' || typeof weight !== 'number' || typeof token !== 'string') {
      throw malformed('a sparse_embedding entry is not {index, value, token}', json, expect);
    }
    if (!Number.isInteger(index) || index < 0 || index > MAX_SPARSE_INDEX) {
      throw malformed(`sparse_embedding index ${index} is not an integer in 0..${MAX_SPARSE_INDEX}`, json, expect);
    }
    // Rounded to float32 here so the shard column holds what a reader of the JSON would get.
    const rounded = Math.fround(weight);
    if (!Number.isFinite(rounded)) throw malformed(`sparse_embedding value ${weight} is beyond float32`, json, expect);
    entries[position] = { index, value: rounded, token };
  }
  return entries;
}

function totalTokens(json: unknown, expect: DecodeExpectation): number {
  const usage = field(json, 'usage');
  const total = usage && typeof usage === 'object' ? (usage as Record<string, unknown>).total_tokens : undefined;
  if (typeof total !== 'number' || !Number.isInteger(total) || total < 0) throw malformed('usage.total_tokens is missing', json, expect);
  // A bogus count would be billed into the manifest, the metrics and the rate gate's token budget.
  if (total > expect.maxTotalTokens) {
    throw malformed(`usage.total_tokens ${total} is more than ${expect.count} texts can use (at most ${expect.maxTotalTokens})`, json, expect);
  }
  return total;
}

function requestId(json: unknown, fields: readonly string[], expect: DecodeExpectation): string {
  for (const name of fields) {
    const value = field(json, name);
    if (typeof value === 'string' && value.length > 0) return value;
  }
  return expect.headerRequestId ?? '';
}

function parseJson(body: string | Uint8Array, expect: DecodeExpectation): unknown {
  if (typeof body !== 'string') {
    const parsed = parseJsonBytes(body, FLOAT32_KEYS, SPARSE_KEYS);
    if (parsed !== undefined) return parsed;
    body = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  }
  try {
    return JSON.parse(body) as unknown;
  } catch (cause) {
    throw new ProviderUnavailableError(
      `DashScope returned a malformed response: body is not JSON (${body.length} chars)${idSuffix(expect.headerRequestId)}`,
      { status: 200, requestId: expect.headerRequestId },
      { cause },
    );
  }
}

function field(json: unknown, name: string): unknown {
  return json && typeof json === 'object' ? (json as Record<string, unknown>)[name] : undefined;
}

/**
 * An error a 200 body carries instead of embeddings, in either API's envelope (`{code, message}`,
 * `{error: {code, message}}`), as `; the body carries an error: <code>: <message>`; else ''. The
 * malformed-response message dropped the provider's own reason.
 */
function carriedError(json: unknown): string {
  const nested = field(json, 'error');
  const source = nested && typeof nested === 'object' ? nested : json;
  const code = field(source, 'code');
  const message = field(source, 'message');
  if (typeof message !== 'string' && typeof code !== 'string') return '';
  return `; the body carries an error: ${[code, message].filter((part) => typeof part === 'string' && part !== '').join(': ')}`;
}

function malformed(reason: string, json: unknown, expect: DecodeExpectation): ProviderUnavailableError {
  const bodyId = field(json, 'request_id') ?? field(json, 'id');
  const id = typeof bodyId === 'string' ? bodyId : expect.headerRequestId;
  return new ProviderUnavailableError(`DashScope returned a malformed response: ${reason}${idSuffix(id)}`, {
    status: 200,
    requestId: id,
  });
}

const idSuffix = (requestId: string | undefined): string => (requestId ? ` (request_id ${requestId})` : '');
