import type { DashScopeSettings } from '../config.js';
import type { EmbeddingClient, EmbeddingParameters, EmbeddingResult } from '../embedding.js';
import { EmbedqError, ProviderUnavailableError } from '../errors.js';
import { wantsDense, wantsSparse } from '../models.js';
import { classifyFailure, redactSecrets } from './classify-failure.js';
import { decodeCompatResponse, decodeNativeResponse, type DecodeExpectation } from './decode-response.js';
import { type CompatEmbeddingRequest, embeddingUrl, type NativeEmbeddingRequest } from './endpoints.js';
import { validateRequest } from './validate-request.js';

/** Injectable dependencies, for tests or a custom dispatcher. */
export interface DashScopeClientDeps {
  /** Default: the global fetch (undici, keep-alive connection reuse). */
  fetch?: typeof fetch;
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
 */
export function createDashScopeClient(settings: DashScopeSettings, deps: DashScopeClientDeps = {}): EmbeddingClient {
  const fetchImpl = deps.fetch ?? globalThis.fetch;
  const { apiKey, timeoutMs } = settings;
  const nativeUrl = embeddingUrl(settings.baseUrl, 'dashscope');
  const compatUrl = embeddingUrl(settings.baseUrl, 'openai');
  const headers = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', accept: 'application/json' };

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
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    const describeTransportFailure = (what: string, cause: unknown): unknown => {
      if (options.signal?.aborted) return options.signal.reason as unknown;
      const reason = timeout.aborted ? `timed out after ${timeoutMs} ms` : `failed: ${causeText(cause)}`;
      return scrub(new ProviderUnavailableError(`DashScope ${what} ${reason}`, {}, { cause }));
    };

    let response: Response;
    try {
      response = await fetchImpl(native ? nativeUrl : compatUrl, { method: 'POST', headers, body, signal });
    } catch (cause) {
      throw describeTransportFailure('request', cause);
    }
    // Always read the body to the end: an unread body pins the keep-alive connection.
    // Bytes, not text: the decoder reads vectors from UTF-8 directly (see parse-json-bytes.ts).
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await response.arrayBuffer());
    } catch (cause) {
      throw describeTransportFailure('response body', cause);
    }
    if (!response.ok) {
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
      throw scrub(classifyFailure({ status: response.status, body: text, headers: response.headers, api: parameters.api }));
    }
    const expect: DecodeExpectation = {
      count: texts.length,
      dimension: parameters.dimension,
      dense: wantsDense(parameters.outputType),
      sparse: wantsSparse(parameters.outputType),
      headerRequestId: response.headers.get('x-request-id') ?? undefined,
    };
    return native ? decodeNativeResponse(bytes, expect) : decodeCompatResponse(bytes, expect);
  }

  return {
    embed,
    // Connections belong to the global undici dispatcher (or the injected fetch), shared with the
    // rest of the process; there is nothing of our own to release.
    close: () => Promise.resolve(),
  };
}

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

function compatBody(texts: readonly string[], parameters: EmbeddingParameters): CompatEmbeddingRequest {
  return { model: parameters.model, input: [...texts], dimensions: parameters.dimension, encoding_format: 'float' };
}

/** fetch wraps the real reason (ECONNRESET, "other side closed", …) in `cause`; show both. */
function causeText(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause);
  const inner = cause.cause instanceof Error ? `: ${cause.cause.message}` : '';
  return redactSecrets(`${cause.message}${inner}`);
}
