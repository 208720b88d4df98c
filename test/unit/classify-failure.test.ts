import { describe, expect, it } from 'vitest';

import { classifyFailure } from '../../src/dashscope/classify-failure.js';
import {
  ContentRejectedError,
  ProviderAccountError,
  ProviderRateLimitedError,
  ProviderRejectedError,
  ProviderUnavailableError,
  type RateLimitKind,
} from '../../src/errors.js';
import type { Api } from '../../src/models.js';

const ID = '0b7e2bd5-6c6f-9c51-a2f6-0c1e0e3e8a11';

/** A native error body (facts §1a). */
const native = (code: string, message: string): string => JSON.stringify({ code, message, request_id: ID });
/** A compatible-mode error body (facts §1a); `type` defaults to the code, as DashScope often does. */
const compat = (code: string | null, message: string, type: string = code ?? 'invalid_request_error'): string =>
  JSON.stringify({ error: { message, type, param: null, code }, id: ID, request_id: ID });

type ErrorClass =
  | typeof ProviderRateLimitedError
  | typeof ProviderUnavailableError
  | typeof ProviderRejectedError
  | typeof ContentRejectedError
  | typeof ProviderAccountError;

interface Row {
  name: string;
  status: number;
  api: Api;
  body: string;
  expected: ErrorClass;
  kind?: RateLimitKind;
  /** The provider code the error must carry (undefined: none). */
  providerCode?: string;
  /** Text the message must contain besides status and code. */
  mentions?: string;
}

const rows: Row[] = [
  // 429 throttling, by kind
  { name: 'RPM native', status: 429, api: 'dashscope', body: native('Throttling.RateQuota', 'Requests rate limit exceeded, please try again later.'), expected: ProviderRateLimitedError, kind: 'requests', providerCode: 'Throttling.RateQuota' },
  { name: 'RPM native LimitRequests', status: 429, api: 'dashscope', body: native('LimitRequests', 'Requests rate limit exceeded, please try again later.'), expected: ProviderRateLimitedError, kind: 'requests', providerCode: 'LimitRequests' },
  { name: 'RPM compat', status: 429, api: 'openai', body: compat('limit_requests', 'You exceeded your current requests list.'), expected: ProviderRateLimitedError, kind: 'requests', providerCode: 'limit_requests' },
  { name: 'TPM native', status: 429, api: 'dashscope', body: native('Throttling.AllocationQuota', 'Allocated quota exceeded, please increase your quota limit.'), expected: ProviderRateLimitedError, kind: 'tokens', providerCode: 'Throttling.AllocationQuota' },
  { name: 'TPM compat insufficient_quota', status: 429, api: 'openai', body: compat('insufficient_quota', 'You exceeded your current quota, please check your plan and billing details.'), expected: ProviderRateLimitedError, kind: 'tokens', providerCode: 'insufficient_quota' },
  { name: 'burst native', status: 429, api: 'dashscope', body: native('Throttling.BurstRate', 'Request rate increased too quickly.'), expected: ProviderRateLimitedError, kind: 'burst', providerCode: 'Throttling.BurstRate' },
  { name: 'burst compat', status: 429, api: 'openai', body: compat('limit_burst_rate', 'Request rate increased too quickly.'), expected: ProviderRateLimitedError, kind: 'burst', providerCode: 'limit_burst_rate' },
  { name: 'generic Throttling', status: 429, api: 'dashscope', body: native('Throttling', 'Requests throttling triggered.'), expected: ProviderRateLimitedError, kind: 'other', providerCode: 'Throttling' },
  { name: '429 without code, RPM message', status: 429, api: 'dashscope', body: JSON.stringify({ message: 'Requests rate limit exceeded, please try again later.' }), expected: ProviderRateLimitedError, kind: 'requests' },
  { name: '429 plain text', status: 429, api: 'dashscope', body: 'Too Many Requests', expected: ProviderRateLimitedError, kind: 'other', mentions: 'Too Many Requests' },
  // 429 billing: waiting fixes nothing
  { name: 'PrepaidBillOverdue', status: 429, api: 'dashscope', body: native('PrepaidBillOverdue', 'The prepaid bill is overdue.'), expected: ProviderAccountError, providerCode: 'PrepaidBillOverdue' },
  { name: 'PostpaidBillOverdue', status: 429, api: 'dashscope', body: native('PostpaidBillOverdue', 'The postpaid bill is overdue.'), expected: ProviderAccountError, providerCode: 'PostpaidBillOverdue' },
  { name: 'CommodityNotPurchased', status: 429, api: 'dashscope', body: native('CommodityNotPurchased', 'Commodity has not purchased yet.'), expected: ProviderAccountError, providerCode: 'CommodityNotPurchased' },
  // account
  { name: 'InvalidApiKey native', status: 401, api: 'dashscope', body: native('InvalidApiKey', 'Invalid API-key provided.'), expected: ProviderAccountError, providerCode: 'InvalidApiKey', mentions: 'DASHSCOPE_API_KEY' },
  { name: 'invalid_api_key compat', status: 401, api: 'openai', body: compat('invalid_api_key', 'Incorrect API key provided. ', 'invalid_request_error'), expected: ProviderAccountError, providerCode: 'invalid_api_key' },
  { name: 'NOT AUTHORIZED', status: 401, api: 'dashscope', body: native('NOT AUTHORIZED', 'Access denied: Either you are not authorized to access this workspace, or the workspace does not exist.'), expected: ProviderAccountError, providerCode: 'NOT AUTHORIZED' },
  { name: 'AccessDenied', status: 403, api: 'dashscope', body: native('AccessDenied', 'Access denied.'), expected: ProviderAccountError, providerCode: 'AccessDenied' },
  { name: 'AccessDenied.Unpurchased', status: 403, api: 'dashscope', body: native('AccessDenied.Unpurchased', 'Access to model denied. Please make sure you are eligible for using the model.'), expected: ProviderAccountError, providerCode: 'AccessDenied.Unpurchased' },
  { name: 'Model.AccessDenied', status: 403, api: 'dashscope', body: native('Model.AccessDenied', 'Model access denied.'), expected: ProviderAccountError, providerCode: 'Model.AccessDenied' },
  { name: 'Workspace.AccessDenied', status: 403, api: 'dashscope', body: native('Workspace.AccessDenied', 'Workspace access denied.'), expected: ProviderAccountError, providerCode: 'Workspace.AccessDenied' },
  { name: 'access_denied compat', status: 403, api: 'openai', body: compat('access_denied', 'Access denied.'), expected: ProviderAccountError, providerCode: 'access_denied' },
  { name: 'FreeTierOnly', status: 403, api: 'dashscope', body: native('AllocationQuota.FreeTierOnly', 'The free tier of the model has been exhausted.'), expected: ProviderAccountError, providerCode: 'AllocationQuota.FreeTierOnly' },
  { name: 'Arrearage native', status: 400, api: 'dashscope', body: native('Arrearage', 'Access denied, please make sure your account is in good standing.'), expected: ProviderAccountError, providerCode: 'Arrearage', mentions: 'good standing' },
  { name: 'Arrearage compat', status: 400, api: 'openai', body: compat('Arrearage', 'Access denied, please make sure your account is in good standing.'), expected: ProviderAccountError, providerCode: 'Arrearage' },
  { name: 'ModelNotFound', status: 404, api: 'dashscope', body: native('ModelNotFound', 'Model can not be found.'), expected: ProviderAccountError, providerCode: 'ModelNotFound', mentions: 'configuration' },
  { name: 'model_not_found compat', status: 404, api: 'openai', body: compat('model_not_found', 'The model `x` does not exist or you do not have access to it.', 'invalid_request_error'), expected: ProviderAccountError, providerCode: 'model_not_found' },
  { name: 'model_not_supported compat', status: 404, api: 'openai', body: compat('model_not_supported', 'Unsupported model x for OpenAI compatibility mode.'), expected: ProviderAccountError, providerCode: 'model_not_supported' },
  { name: '404 without body', status: 404, api: 'dashscope', body: '', expected: ProviderAccountError, mentions: 'DASHSCOPE_BASE_URL' },
  // moderation
  { name: 'DataInspectionFailed', status: 400, api: 'dashscope', body: native('DataInspectionFailed', 'Input or output data may contain inappropriate content.'), expected: ContentRejectedError, providerCode: 'DataInspectionFailed' },
  { name: 'data_inspection_failed compat', status: 400, api: 'openai', body: compat('data_inspection_failed', 'Input data may contain inappropriate content.'), expected: ContentRejectedError, providerCode: 'data_inspection_failed' },
  // inputs: this request only
  { name: 'batch size compat (observed)', status: 400, api: 'openai', body: compat('InvalidParameter', '<400> InternalError.Algo.InvalidParameter: Value error, batch size is invalid, it should not be larger than 10.: input.contents'), expected: ProviderRejectedError, providerCode: 'InvalidParameter', mentions: 'batch size' },
  { name: 'batch size native', status: 400, api: 'dashscope', body: native('InvalidParameter', '<400> InternalError.Algo.InvalidParameter: Value error, batch size is invalid, it should not be larger than 10.: input.contents'), expected: ProviderRejectedError, providerCode: 'InvalidParameter' },
  { name: 'contents type', status: 400, api: 'dashscope', body: native('InvalidParameter', 'Value error, contents is neither str nor list of str.: input.contents'), expected: ProviderRejectedError, providerCode: 'InvalidParameter' },
  { name: 'blank text', status: 400, api: 'dashscope', body: native('InvalidParameter', '<400> InternalError.Algo.InvalidParameter: Value error, contents should not be empty or only whitespace.: input.contents'), expected: ProviderRejectedError, providerCode: 'InvalidParameter' },
  { name: 'too long compat', status: 400, api: 'openai', body: compat('invalid_parameter_error', '<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 8192]', 'invalid_request_error'), expected: ProviderRejectedError, providerCode: 'invalid_parameter_error', mentions: 'Range of input length' },
  { name: 'EmptyInput', status: 400, api: 'dashscope', body: native('BadRequest.EmptyInput', 'Required input parameter missing from request.'), expected: ProviderRejectedError, providerCode: 'BadRequest.EmptyInput' },
  { name: 'body too large', status: 413, api: 'dashscope', body: native('BadRequest.TooLarge', 'Payload Too Large.'), expected: ProviderRejectedError, providerCode: 'BadRequest.TooLarge' },
  // about the line, though the message mentions words of the setup (issue 9, item 11)
  { name: 'line mentions model', status: 400, api: 'dashscope', body: native('InvalidParameter', 'Value error, the input text cannot be processed by the model.: input.contents'), expected: ProviderRejectedError, providerCode: 'InvalidParameter' },
  { name: 'line mentions dimension', status: 400, api: 'openai', body: compat('invalid_parameter_error', 'Input text has an unexpected dimension of nesting.', 'invalid_request_error'), expected: ProviderRejectedError, providerCode: 'invalid_parameter_error' },
  { name: 'proxy 400 without code', status: 400, api: 'dashscope', body: '<html>400 Bad Request (model gateway)</html>', expected: ProviderRejectedError, mentions: '400 Bad Request' },
  // parameters every request shares: configuration
  { name: 'dimension compat (observed)', status: 400, api: 'openai', body: compat('InvalidParameter', 'InternalError.Algo.InvalidParameter: Value error, dimension for embedding v3 is invalid, its value shold be in [64, 128, 256, 512, 768, 1024, 1536, 2048, 3072]'), expected: ProviderAccountError, providerCode: 'InvalidParameter', mentions: 'configuration problem' },
  { name: 'dimension native', status: 400, api: 'dashscope', body: native('InvalidParameter', '<400> InternalError.Algo.InvalidParameter: Value error, dimension for embedding v3 is invalid, its value shold be in [512, 768, 1024]'), expected: ProviderAccountError, providerCode: 'InvalidParameter', mentions: 'configuration problem' },
  { name: 'output_type', status: 400, api: 'dashscope', body: native('InvalidParameter', 'Value error, output_type is invalid.: parameters.output_type'), expected: ProviderAccountError, providerCode: 'InvalidParameter' },
  { name: 'EmptyModel', status: 400, api: 'dashscope', body: native('BadRequest.EmptyModel', 'Required parameter "model" missing from request.'), expected: ProviderAccountError, providerCode: 'BadRequest.EmptyModel' },
  { name: 'EmptyParameters', status: 400, api: 'dashscope', body: native('BadRequest.EmptyParameters', 'Required parameter "parameters" missing from request.'), expected: ProviderAccountError, providerCode: 'BadRequest.EmptyParameters' },
  { name: 'compat missing model', status: 400, api: 'openai', body: compat(null, 'you must provide a model parameter.', 'invalid_request_error'), expected: ProviderAccountError, providerCode: 'invalid_request_error' },
  // transient
  { name: '408', status: 408, api: 'dashscope', body: native('RequestTimeOut', 'Request timed out, please try again later.'), expected: ProviderUnavailableError, providerCode: 'RequestTimeOut' },
  { name: 'InternalError', status: 500, api: 'dashscope', body: native('InternalError', 'An internal error has occured, please try again later or contact service support.'), expected: ProviderUnavailableError, providerCode: 'InternalError' },
  { name: 'internal_error compat', status: 500, api: 'openai', body: compat('internal_error', 'An internal error has occured, please try again later or contact service support.'), expected: ProviderUnavailableError, providerCode: 'internal_error' },
  { name: 'InternalError.Algo', status: 500, api: 'dashscope', body: native('InternalError.Algo', 'inference internal error.'), expected: ProviderUnavailableError, providerCode: 'InternalError.Algo' },
  { name: 'InternalError.Timeout', status: 500, api: 'dashscope', body: native('InternalError.Timeout', 'An internal timeout error has occured during execution.'), expected: ProviderUnavailableError, providerCode: 'InternalError.Timeout' },
  { name: '502 HTML', status: 502, api: 'dashscope', body: '<html><body>502 Bad Gateway</body></html>', expected: ProviderUnavailableError, mentions: '502 Bad Gateway' },
  { name: 'ModelServingError', status: 503, api: 'dashscope', body: native('ModelServingError', 'Too many requests. Your requests are being throttled due to system capacity limits. Please try again later.'), expected: ProviderUnavailableError, providerCode: 'ModelServingError' },
  { name: 'ModelUnavailable', status: 503, api: 'dashscope', body: native('ModelUnavailable', 'Model is unavailable, please try again later.'), expected: ProviderUnavailableError, providerCode: 'ModelUnavailable' },
  { name: '504 empty', status: 504, api: 'openai', body: '', expected: ProviderUnavailableError, mentions: '(empty body)' },
  // redirects: the client follows none and DashScope sends none, so the base URL is wrong
  { name: '301 empty', status: 301, api: 'dashscope', body: '', expected: ProviderAccountError, mentions: 'check DASHSCOPE_BASE_URL' },
  { name: '308 HTML', status: 308, api: 'openai', body: '<html>Permanent Redirect</html>', expected: ProviderAccountError, mentions: 'check DASHSCOPE_BASE_URL' },
];

describe('classifyFailure', () => {
  it.each(rows)('$name → $expected.name', (row) => {
    const error = classifyFailure({ status: row.status, body: row.body, api: row.api });
    expect(error.constructor).toBe(row.expected);
    expect(error.retryable).toBe(row.expected === ProviderRateLimitedError || row.expected === ProviderUnavailableError);
    const failure = (error as unknown as { failure: unknown }).failure;
    const bodyHasId = row.body.includes(ID);
    expect(failure).toEqual({ status: row.status, providerCode: row.providerCode, requestId: bodyHasId ? ID : undefined });
    if (row.kind) {
      expect((error as ProviderRateLimitedError).kind).toBe(row.kind);
      expect((error as ProviderRateLimitedError).retryAfterMs).toBeUndefined();
    }
    expect(error.message).toContain(`HTTP ${row.status}`);
    if (row.providerCode) expect(error.message).toContain(row.providerCode);
    if (bodyHasId) expect(error.message).toContain(`request_id ${ID}`);
    const parsed = row.body.startsWith('{') ? (JSON.parse(row.body) as { message?: string; error?: { message: string } }) : undefined;
    const providerMessage = parsed?.message ?? parsed?.error?.message;
    if (providerMessage) expect(error.message).toContain(providerMessage);
    if (row.mentions) expect(error.message).toContain(row.mentions);
    expect(error.message.startsWith(row.api === 'dashscope' ? 'DashScope request failed' : 'DashScope compatible-mode request failed')).toBe(true);
  });

  it('covers every failure kind of facts §1b with the expected classes', () => {
    const classes = new Set(rows.map((row) => row.expected));
    expect(classes.size).toBe(5);
  });

  it.each([
    ['7', 7000],
    ['0', 0],
    ['1.5', 1500],
    ['60', 60_000],
    ['61', undefined],
    ['soon', undefined],
    ['Wed, 21 Oct 2026 07:28:00 GMT', undefined],
  ])('honours Retry-After %j only within 0–60 s', (value, expected) => {
    const headers = new Headers({ 'retry-after': value });
    const error = classifyFailure({ status: 429, body: native('Throttling.RateQuota', 'Requests rate limit exceeded.'), headers, api: 'dashscope' });
    expect(error).toBeInstanceOf(ProviderRateLimitedError);
    expect((error as ProviderRateLimitedError).retryAfterMs).toBe(expected);
  });

  it('takes the request id from x-request-id when the body has none', () => {
    const headers = new Headers({ 'x-request-id': 'from-header' });
    const error = classifyFailure({ status: 502, body: 'Bad Gateway', headers, api: 'dashscope' });
    expect(error.message).toBe('DashScope request failed: HTTP 502: Bad Gateway (request_id from-header)');
    expect((error as ProviderUnavailableError).failure).toEqual({ status: 502, providerCode: undefined, requestId: 'from-header' });
  });

  it.each([301, 302, 303, 307, 308])('fails a %i redirect as configuration, naming where it points (the client follows none)', (status) => {
    const headers = new Headers({ location: 'https://dashscope-intl.aliyuncs.com/api/v1/services/embeddings/text-embedding/text-embedding' });
    const error = classifyFailure({ status, body: '', headers, api: 'dashscope' });
    expect(error).toBeInstanceOf(ProviderAccountError);
    expect(error.retryable).toBe(false);
    expect(error.message).toBe(
      `DashScope request failed: HTTP ${status}: (empty body) — a configuration problem: check DASHSCOPE_BASE_URL; it redirects to https://dashscope-intl.aliyuncs.com/api/v1/services/embeddings/text-embedding/text-embedding`,
    );
  });

  it('keeps a credential a redirect carries out of its message, and a final 1xx stays transient', () => {
    const headers = new Headers({ location: 'https://portal.example/login?token=Bearer sk-abcdef0123456789' });
    expect(classifyFailure({ status: 302, body: '', headers, api: 'dashscope' }).message).not.toContain('abcdef0123456789');
    expect(classifyFailure({ status: 199, body: '', api: 'dashscope' })).toBeInstanceOf(ProviderUnavailableError);
  });

  it('keeps a non-JSON body in the message, truncated', () => {
    const error = classifyFailure({ status: 500, body: 'x'.repeat(1000), api: 'dashscope' });
    expect(error.message).toBe(`DashScope request failed: HTTP 500: ${'x'.repeat(300)}… (1000 chars)`);
  });

  it('never repeats a credential a proxy echoes', () => {
    const body = 'upstream rejected: Authorization: Bearer sk-abcdef0123456789 for key sk-abcdef0123456789';
    const error = classifyFailure({ status: 502, body, api: 'openai' });
    expect(error.message).not.toContain('abcdef0123456789');
    expect(error.message).toBe('DashScope compatible-mode request failed: HTTP 502: upstream rejected: Authorization: Bearer [redacted] for key sk-[redacted]');
  });

  it('formats the whole message', () => {
    const error = classifyFailure({ status: 429, body: native('Throttling.RateQuota', 'Requests rate limit exceeded, please try again later.'), api: 'dashscope' });
    expect(error.message).toBe(`DashScope request failed: HTTP 429 Throttling.RateQuota: Requests rate limit exceeded, please try again later. (request_id ${ID})`);
  });
});
