import {
  ContentRejectedError,
  type EmbedqError,
  ProviderAccountError,
  type ProviderFailure,
  ProviderRateLimitedError,
  ProviderRejectedError,
  ProviderUnavailableError,
  type RateLimitKind,
} from '../errors.js';
import type { Api } from '../models.js';

/** A failed HTTP exchange with DashScope, as {@link classifyFailure} needs it. */
export interface HttpFailure {
  status: number;
  /** The raw response body (JSON on DashScope, anything on a proxy). */
  body: string;
  /** Response headers; only `Retry-After`, `x-request-id` and `Location` are read. */
  headers?: { get(name: string): string | null } | undefined;
  /** Which endpoint answered; the two use different error envelopes (facts §1a). */
  api: Api;
}

/** Longest raw (non-JSON) body kept in a message. */
const MAX_RAW_BODY_CHARS = 300;
/** A `Retry-After` is honoured only within this range, as the AI SDK does. */
const MAX_RETRY_AFTER_SECONDS = 60;

/** What the two error envelopes carry, read leniently. */
interface ParsedBody {
  code?: string | undefined;
  type?: string | undefined;
  message?: string | undefined;
  requestId?: string | undefined;
  raw?: string | undefined;
}

// Codes per dashscope-facts.md §1b; matched case-insensitively (compat codes are snake_case).
const BILLING_CODES = new Set(['prepaidbilloverdue', 'postpaidbilloverdue', 'commoditynotpurchased', 'arrearage']);
const AUTH_CODES = new Set(['invalidapikey', 'invalid_api_key', 'not authorized']);
const MODEL_CODES = new Set(['modelnotfound', 'model_not_found', 'model_not_supported']);
const MODERATION_CODES = new Set(['datainspectionfailed', 'data_inspection_failed']);
const RATE_KIND_BY_CODE: ReadonlyMap<string, RateLimitKind> = new Map([
  ['throttling.ratequota', 'requests'],
  ['limitrequests', 'requests'],
  ['limit_requests', 'requests'],
  ['throttling.allocationquota', 'tokens'],
  // In DashScope's compatible mode `insufficient_quota` is TPM throttling, not billing (facts §1b).
  ['insufficient_quota', 'tokens'],
  ['throttling.burstrate', 'burst'],
  ['limit_burst_rate', 'burst'],
  ['throttling', 'other'],
]);
const UNAVAILABLE_CODES = new Set([
  'internalerror',
  'internal_error',
  'internalerror.algo',
  'internalerror.timeout',
  'requesttimeout',
  'systemerror',
  'modelservicefailed',
  'modelservingerror',
  'modelunavailable',
]);
/** Request setup that every request shares: rejecting one means rejecting all. */
const CONFIG_CODES = new Set(['badrequest.emptymodel', 'badrequest.emptyparameters']);
/**
 * Messages that name a shared parameter as the invalid one (DashScope's "dimension for embedding v3
 * is invalid, its value shold be in [...]", "parameter.output_type ..."). A message that merely
 * mentions a word like "model" or "dimension" is about the line, not the setup.
 */
const CONFIG_MESSAGE =
  /\b(dimensions?)\b[^.]{0,40}\b(is invalid|invalid|should be in|must be one of|not supported)\b|\bparameters?\.(dimension|output_type|text_type|instruct)\b|\b(output_type|text_type|encoding_format|instruct)\b[^.]{0,40}\b(is invalid|invalid|should be|must be|not supported)\b|\bmodel\b[^.]{0,30}\b(does not exist|not exist|not found|not supported|is invalid)\b|\b(provide|missing)\b[^.]{0,20}\bmodel\b/i;

/**
 * Maps a failed DashScope response to the error family. Pure: the same input always gives the
 * same class, kind and message. The body's code wins over the status, because DashScope files
 * billing failures under 429 and waiting fixes none of them (facts §1b).
 *
 * Messages carry the status, provider code, provider message and request id; secrets that a proxy
 * might echo (`Bearer …`, `sk-…`) are blanked.
 */
export function classifyFailure(failure: HttpFailure): EmbedqError {
  const { status, api } = failure;
  const parsed = parseBody(failure.body);
  const requestId = parsed.requestId ?? failure.headers?.get('x-request-id') ?? undefined;
  const codes = [parsed.code, parsed.type].filter((code): code is string => !!code).map((code) => code.toLowerCase());
  const providerCode = parsed.code ?? parsed.type;
  const details: ProviderFailure = { status, providerCode, requestId };
  const describe = (hint?: string): string => describeFailure(api, status, parsed, requestId, hint);
  const has = (set: ReadonlySet<string>): boolean => codes.some((code) => set.has(code));

  if (has(BILLING_CODES)) {
    return new ProviderAccountError(describe('the account is not in good standing; no request can succeed'), details);
  }
  if (has(AUTH_CODES) || status === 401) {
    return new ProviderAccountError(describe('check DASHSCOPE_API_KEY and that it belongs to the region of the base URL'), details);
  }
  if (status === 403 || codes.some((code) => code.includes('accessdenied') || code === 'access_denied' || code.includes('freetieronly'))) {
    return new ProviderAccountError(describe('the account may not use this model or quota'), details);
  }
  if (has(MODEL_CODES)) {
    return new ProviderAccountError(describe('a configuration problem: the model is unknown to this endpoint'), details);
  }
  if (has(MODERATION_CODES)) {
    return new ContentRejectedError(describe(), details);
  }
  const rateKind = rateLimitKind(status, codes, parsed.message);
  if (rateKind) {
    return new ProviderRateLimitedError(describe(), rateKind, details, retryAfterMs(failure.headers));
  }
  if (status === 408 || status >= 500 || has(UNAVAILABLE_CODES)) {
    return new ProviderUnavailableError(describe(), details);
  }
  if (status === 404) {
    // No code: the path or base URL is wrong, which is configuration.
    return new ProviderAccountError(describe('a configuration problem: check DASHSCOPE_BASE_URL'), details);
  }
  if (status === 409) {
    return new ProviderUnavailableError(describe(), details);
  }
  if (status >= 400 && status < 500) {
    if (has(CONFIG_CODES) || (parsed.message !== undefined && CONFIG_MESSAGE.test(parsed.message))) {
      return new ProviderAccountError(
        describe('a configuration problem: this parameter is shared by every request, so every request would fail'),
        details,
      );
    }
    // Batch size, empty or over-long inputs, moderation-free content errors: about this request's
    // texts, so splitting the batch can isolate the bad line.
    return new ProviderRejectedError(describe(), details);
  }
  if (status >= 300 && status < 400) {
    // The client follows no redirects and DashScope sends none: the base URL points somewhere else
    // (http for https, a portal, a moved host), and every request would meet the same answer.
    const location = failure.headers?.get('location');
    const target = location ? `; it redirects to ${redactSecrets(location)}` : '';
    return new ProviderAccountError(describe(`a configuration problem: check DASHSCOPE_BASE_URL${target}`), details);
  }
  // A final 1xx only comes from a misbehaving proxy: treat as transient.
  return new ProviderUnavailableError(describe(), details);
}

function rateLimitKind(status: number, codes: readonly string[], message: string | undefined): RateLimitKind | undefined {
  for (const code of codes) {
    const kind = RATE_KIND_BY_CODE.get(code);
    if (kind) return kind;
  }
  if (codes.some((code) => code.startsWith('throttling'))) return 'other';
  if (status !== 429) return undefined;
  // A 429 without a known code: tell the limits apart by message, as the rate-limit page does.
  const text = message ?? '';
  if (/requests rate limit|requests list|request limit/i.test(text)) return 'requests';
  if (/allocated quota|current quota/i.test(text)) return 'tokens';
  if (/increased too quickly/i.test(text)) return 'burst';
  return 'other';
}

function retryAfterMs(headers: HttpFailure['headers']): number | undefined {
  const value = headers?.get('retry-after')?.trim();
  if (!value || !/^\d+(\.\d+)?$/.test(value)) return undefined;
  const seconds = Number(value);
  return seconds <= MAX_RETRY_AFTER_SECONDS ? Math.round(seconds * 1000) : undefined;
}

function parseBody(body: string): ParsedBody {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return { raw: body };
  }
  if (!json || typeof json !== 'object') return { raw: body };
  const record = json as Record<string, unknown>;
  const error = record.error && typeof record.error === 'object' ? (record.error as Record<string, unknown>) : undefined;
  return {
    code: text(record.code) ?? text(error?.code),
    type: text(error?.type),
    message: text(record.message) ?? text(error?.message),
    requestId: text(record.request_id) ?? text(record.id),
    raw: record.code === undefined && !error ? body : undefined,
  };
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number') return String(value);
  return undefined;
}

function describeFailure(api: Api, status: number, parsed: ParsedBody, requestId: string | undefined, hint: string | undefined): string {
  const endpoint = api === 'dashscope' ? 'DashScope' : 'DashScope compatible-mode';
  const parts = [`${endpoint} request failed: HTTP ${status}`];
  const code = parsed.code ?? parsed.type;
  if (code) parts.push(code);
  let message = parsed.message;
  if (message === undefined && parsed.raw !== undefined) {
    const raw = parsed.raw.trim();
    message = raw.length > MAX_RAW_BODY_CHARS ? `${raw.slice(0, MAX_RAW_BODY_CHARS)}… (${raw.length} chars)` : raw || '(empty body)';
  }
  let result = parts.join(' ') + (message ? `: ${redactSecrets(message)}` : '');
  if (requestId) result += ` (request_id ${requestId})`;
  if (hint) result += ` — ${hint}`;
  return result;
}

/** Blanks anything that looks like a credential, in case a proxy echoes request headers. */
export function redactSecrets(value: string): string {
  return value.replace(/(Bearer\s+)\S+/gi, '$1[redacted]').replace(/\bsk-[A-Za-z0-9_-]{4,}/g, 'sk-[redacted]');
}
