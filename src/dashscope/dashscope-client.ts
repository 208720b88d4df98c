import type { Dispatcher } from 'undici';

import type { DashScopeSettings } from '../config.js';
import type { EmbeddingClient, EmbeddingParameters, EmbeddingResult } from '../embedding.js';
import { EmbedqError, ProviderUnavailableError } from '../errors.js';
import { MODELS, wantsDense, wantsSparse } from '../models.js';
import { classifyFailure, redactSecrets } from './classify-failure.js';
import { ACCEPT_ENCODING, decodeContentEncoding } from './content-encoding.js';
import { decodeCompatResponse, decodeNativeResponse, type DecodeExpectation } from './decode-response.js';
import { BodyBuffers } from './body-buffers.js';
import { type CompatEmbeddingRequest, embeddingUrl, type NativeEmbeddingRequest } from './endpoints.js';
import { postJson, type PooledResponse, TransportError } from './post-json.js';
import { validateRequest } from './validate-request.js';

/** Injectable dependencies, for tests or a custom dispatcher. */
export interface DashScopeClientDeps {
  /**
   * Default: a keep-alive connection pool of the client's own (undici's Agent), closed by `close`.
   * A dispatcher passed in belongs to the caller, who closes it.
   */
  dispatcher?: Dispatcher;
}

/**
 * The real DashScope embedding client: one HTTP request per `embed` call, on the native endpoint
 * (dense and sparse) or the OpenAI-compatible one (dense only), per `parameters.api`.
 *
 * - Validates before sending (RequestInvalidError), so no quota is spent on a request the server
 *   would refuse anyway.
 * - Every failure becomes one of the error family (classifyFailure for HTTP errors; network
 *   errors, resets and timeouts become ProviderUnavailableError with the cause attached).
 * - Results come back in input order, placed by `text_index`/`index`.
 * - A caller's abort signal is honoured; when it fires, the signal's reason is rethrown as is so
 *   the caller can tell its own cancellation from a provider failure.
 *
 * Factories do no I/O: nothing is opened until the first request.
 *
 * HTTP goes straight to an undici dispatcher (post-json.ts) on a pool of keep-alive connections,
 * not the global `fetch`: fetch builds WHATWG Request/Response/Headers objects and streams per
 * call, and cost a worker about 1 ms of CPU per request, as much again as the rest of the request
 * (measured against the emulator); undici's `request` still builds a stream per response and
 * copies the body once more, so bodies are read into reused buffers instead (body-buffers.ts).
 * What fetch did for us is done here: compressed bodies are decoded (content-encoding.ts), the
 * timeout and the caller's signal both abort the request.
 */
export function createDashScopeClient(settings: DashScopeSettings, deps: DashScopeClientDeps = {}): EmbeddingClient {
  let dispatcher = deps.dispatcher;
  const ownsDispatcher = deps.dispatcher === undefined;
  const { apiKey, timeoutMs } = settings;
  const nativeUrl = new URL(embeddingUrl(settings.baseUrl, 'dashscope'));
  const compatUrl = new URL(embeddingUrl(settings.baseUrl, 'openai'));
  const bodyBuffers = new BodyBuffers();
  const headers = {
    authorization: `Bearer ${apiKey}`,
    'content-type': 'application/json',
    accept: 'application/json',
    'accept-encoding': ACCEPT_ENCODING,
  };

  /** Last line of defence: no message or cause text carries the key. */
  const scrub = (error: EmbedqError): EmbedqError => {
    if (apiKey && error.message.includes(apiKey)) error.message = error.message.replaceAll(apiKey, '[redacted]');
    return error;
  };

  async function embed(
    texts: readonly string[],
    parameters: EmbeddingParameters,
    options: { signal?: AbortSignal } = {},
  ): Promise<EmbeddingResult> {
    await validateRequest(texts, parameters);
    const native = parameters.api === 'dashscope';
    const body = JSON.stringify(native ? nativeBody(texts, parameters) : compatBody(texts, parameters));
    options.signal?.throwIfAborted();
    // One controller for both the timeout and the caller's signal (AbortSignal.any and
    // AbortSignal.timeout cost more per request than this, and leave more garbage).
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref();
    const onAbort = (): void => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const describeTransportFailure = (what: string, cause: unknown): unknown => {
      if (options.signal?.aborted) return options.signal.reason as unknown;
      const reason = timedOut ? `timed out after ${timeoutMs} ms` : `failed: ${causeText(cause)}`;
      return scrub(new ProviderUnavailableError(`DashScope ${what} ${reason}`, {}, { cause }));
    };

    // undici is loaded on the first request, not with the client: it is ~100 modules, and loading
    // them at start delayed a worker's first requests by up to a second on a busy machine.
    const { Agent } = await loadUndici();
    dispatcher ??= new Agent();
    let response: PooledResponse;
    try {
      response = await postJson(dispatcher, native ? nativeUrl : compatUrl, headers, body, controller.signal, bodyBuffers);
    } catch (error) {
      if (error instanceof TransportError) throw describeTransportFailure(error.stage, error.cause);
      throw error;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
    const { status, headers: responseHeaders } = response;
    // Bytes, not text: the decoder reads vectors from UTF-8 directly (see parse-json-bytes.ts).
    let bytes: Uint8Array;
    try {
      bytes = await decodeContentEncoding(response.bytes, responseHeaders['content-encoding']);
    } catch (cause) {
      response.release();
      if (cause instanceof ProviderUnavailableError) throw scrub(cause);
      throw describeTransportFailure('response body', cause);
    }
    // A compressed body was inflated into a buffer of its own: the pooled one can go back now.
    if (bytes !== response.bytes) response.release();
    try {
      return interpret(bytes);
    } finally {
      // Everything decoded is a copy (vectors, tokens, error text): the body's memory is free again.
      response.release();
    }

    function interpret(bytes: Uint8Array): EmbeddingResult {
      const header = (name: string): string | null => responseHeaders[name] ?? null;
      if (status < 200 || status > 299) {
        const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
        throw scrub(classifyFailure({ status, body: text, headers: { get: header }, api: parameters.api }));
      }
      const expect: DecodeExpectation = {
        count: texts.length,
        maxTotalTokens: mostTokensBilled(texts.length, parameters),
        dimension: parameters.dimension,
        dense: wantsDense(parameters.outputType),
        sparse: wantsSparse(parameters.outputType),
        headerRequestId: header('x-request-id') ?? undefined,
      };
      return native ? decodeNativeResponse(bytes, expect) : decodeCompatResponse(bytes, expect);
    }
  }

  return {
    embed,
    close: () => (ownsDispatcher && dispatcher ? dispatcher.close() : Promise.resolve()),
  };
}

type Undici = Pick<typeof import('undici'), 'Agent'>;
let undici: Promise<Undici> | undefined;
const loadUndici = (): Promise<Undici> => (undici ??= import('undici').then(({ Agent }) => ({ Agent })));

function nativeBody(texts: readonly string[], parameters: EmbeddingParameters): NativeEmbeddingRequest {
  return {
    model: parameters.model,
    input: { texts: [...texts] },
    parameters: {
      dimension: parameters.dimension,
      text_type: parameters.textType,
      output_type: parameters.outputType,
      ...(parameters.instruct !== undefined ? { instruct: parameters.instruct } : {}),
    },
  };
}

/**
 * A bound on `usage.total_tokens` for `count` texts, far above any real count and far below a
 * bogus one (1e12 was seen from a broken proxy): per text twice the row limit (a text is checked
 * against it before sending; twice leaves room for the service counting differently than our
 * tokenizer), plus the instruction's UTF-8 bytes in case it is billed with each text (a byte-level
 * BPE never makes more tokens than bytes).
 */
function mostTokensBilled(count: number, parameters: EmbeddingParameters): number {
  const instructBytes = parameters.instruct === undefined ? 0 : Buffer.byteLength(parameters.instruct);
  return count * (2 * MODELS[parameters.model].maxTokensPerText + instructBytes);
}

function compatBody(texts: readonly string[], parameters: EmbeddingParameters): CompatEmbeddingRequest {
  return { model: parameters.model, input: [...texts], dimensions: parameters.dimension, encoding_format: 'float' };
}

/** An error may wrap the real reason (ECONNRESET, "other side closed", …) in `cause`; show both. */
function causeText(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause);
  const inner = cause.cause instanceof Error ? `: ${cause.cause.message}` : '';
  return redactSecrets(`${cause.message}${inner}`);
}
