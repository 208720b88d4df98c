import type { Api } from '../models.js';

/**
 * The error responses the emulator sends, with the codes and texts of dashscope-facts.md §1b.
 * Where the facts sheet has no observed text (blank input, bad output_type or text_type, sparse
 * on the compatible mode, bad JSON on compat) the text below is ours, in the same style.
 */
export interface EmulatorError {
  status: number;
  /** Native `code`. */
  code: string;
  /** Native `message`. */
  message: string;
  /** Compatible-mode `error.code` (null as in OpenAI's own "missing model" error). */
  compatCode: string | null;
  /** Compatible-mode `error.type`. */
  compatType: string;
  /** Compatible-mode `error.message` when it differs from the native one. */
  compatMessage?: string | undefined;
}

/** The prefix DashScope puts on algorithm-side parameter errors (observed on compat bodies). */
const ALGO = '<400> InternalError.Algo.InvalidParameter: ';
/** 400 InvalidParameter as observed on the compatible mode: code and type both `InvalidParameter`. */
const invalidParameter = (message: string): EmulatorError => ({
  status: 400,
  code: 'InvalidParameter',
  message,
  compatCode: 'InvalidParameter',
  compatType: 'InvalidParameter',
});

export const EMULATOR_ERRORS = {
  invalidApiKey: {
    status: 401,
    code: 'InvalidApiKey',
    message: 'Invalid API-key provided.',
    compatCode: 'invalid_api_key',
    compatType: 'invalid_request_error',
    compatMessage: 'Incorrect API key provided. ',
  },
  bodyNotJson: {
    status: 400,
    code: 'InvalidParameter',
    message: 'Required body invalid, please check the request body format.',
    compatCode: 'invalid_request_error',
    compatType: 'invalid_request_error',
    compatMessage: 'The input parameter requires json format.',
  },
  emptyModel: {
    status: 400,
    code: 'BadRequest.EmptyModel',
    message: 'Required parameter "model" missing from request.',
    compatCode: null,
    compatType: 'invalid_request_error',
    compatMessage: 'you must provide a model parameter.',
  },
  emptyInput: {
    status: 400,
    code: 'BadRequest.EmptyInput',
    message: 'Required input parameter missing from request.',
    compatCode: 'BadRequest.EmptyInput',
    compatType: 'invalid_request_error',
  },
  contentsType: invalidParameter(`${ALGO}Value error, contents is neither str nor list of str.: input.contents`),
  batchTooLarge: (max: number) => invalidParameter(`${ALGO}Value error, batch size is invalid, it should not be larger than ${max}.: input.contents`),
  blankText: invalidParameter(`${ALGO}Value error, contents should not be empty or only whitespace.: input.contents`),
  // "shold" is the server's typo (observed). The observed text names "v3" even for v4; we name the model asked for.
  badDimension: (version: string, allowed: readonly number[]) =>
    invalidParameter(`${ALGO}Value error, dimension for embedding ${version} is invalid, its value shold be in [${allowed.join(', ')}]`),
  badOutputType: invalidParameter(`${ALGO}Value error, output_type is invalid, it should be one of [dense, sparse, dense&sparse].: parameters.output_type`),
  badTextType: invalidParameter(`${ALGO}Value error, text_type is invalid, it should be one of [query, document].: parameters.text_type`),
  badInstruct: invalidParameter(`${ALGO}Value error, instruct should be a string.: parameters.instruct`),
  badEncodingFormat: invalidParameter(`${ALGO}Value error, encoding_format is invalid, only float is supported.: encoding_format`),
  sparseOnCompat: invalidParameter(`${ALGO}Value error, output_type sparse is not supported in OpenAI compatible mode, use the DashScope API.: output_type`),
  textTooLong: (max: number): EmulatorError => ({
    status: 400,
    code: 'InvalidParameter',
    message: `${ALGO}Range of input length should be [1, ${max}]`,
    compatCode: 'invalid_parameter_error',
    compatType: 'invalid_request_error',
  }),
  dataInspection: {
    status: 400,
    code: 'DataInspectionFailed',
    message: 'Input or output data may contain inappropriate content.',
    compatCode: 'data_inspection_failed',
    compatType: 'data_inspection_failed',
    compatMessage: 'Input data may contain inappropriate content.',
  },
  modelNotFound: (model: string): EmulatorError => ({
    status: 404,
    code: 'ModelNotFound',
    message: 'Model can not be found.',
    compatCode: 'model_not_found',
    compatType: 'invalid_request_error',
    compatMessage: `The model \`${model}\` does not exist or you do not have access to it.`,
  }),
  rateRequests: {
    status: 429,
    code: 'Throttling.RateQuota',
    message: 'Requests rate limit exceeded, please try again later.',
    compatCode: 'limit_requests',
    compatType: 'limit_requests',
    compatMessage: 'You have exceeded your current request limit. For details, see: https://help.aliyun.com/zh/model-studio/error-code#rate-limit',
  },
  rateTokens: {
    status: 429,
    code: 'Throttling.AllocationQuota',
    message: 'Allocated quota exceeded, please increase your quota limit.',
    compatCode: 'insufficient_quota',
    compatType: 'insufficient_quota',
    compatMessage: 'You exceeded your current quota, please check your plan and billing details.',
  },
  rateBurst: {
    status: 429,
    code: 'Throttling.BurstRate',
    message:
      'Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.',
    compatCode: 'limit_burst_rate',
    compatType: 'limit_burst_rate',
  },
  internal: {
    status: 500,
    code: 'InternalError',
    message: 'An internal error has occured, please try again later or contact service support.',
    compatCode: 'internal_error',
    compatType: 'internal_error',
  },
  tooLarge: {
    status: 413,
    code: 'BadRequest.TooLarge',
    message: 'Payload Too Large.',
    compatCode: 'BadRequest.TooLarge',
    compatType: 'invalid_request_error',
  },
  notFound: {
    status: 404,
    code: 'NotFound',
    message: 'Not Found.',
    compatCode: 'not_found',
    compatType: 'invalid_request_error',
  },
} as const satisfies Record<string, EmulatorError | ((...args: never[]) => EmulatorError)>;

/** The JSON error body of each endpoint (facts §1a). */
export function errorBody(api: Api, error: EmulatorError, requestId: string): string {
  if (api === 'dashscope') return JSON.stringify({ code: error.code, message: error.message, request_id: requestId });
  return JSON.stringify({
    error: { message: error.compatMessage ?? error.message, type: error.compatType, param: null, code: error.compatCode },
    id: requestId,
    request_id: requestId,
  });
}
