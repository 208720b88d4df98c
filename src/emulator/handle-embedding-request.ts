import { isModelName, MODELS, type Api, type ModelName, type OutputType, OUTPUT_TYPES, type TextType, TEXT_TYPES } from '../models.js';
import { estimateTokens, loadTokenizer, mayExceedTokens, type Tokenizer } from '../tokens/count-tokens.js';
import { emulatorEmbedding } from './emulator-embedding.js';
import type { EmulatorFaults, TokenCounting } from './emulator-options.js';
import { EMULATOR_ERRORS, type EmulatorError } from './error-catalog.js';
import type { RateLimiter } from './rate-limiter.js';
import { compatSuccessBody, nativeSuccessBody, type ResponseItem } from './serialize-response.js';

/** What one embedding request needs from the running emulator. */
export interface EmbeddingRequestContext {
  /** When set, the only valid Bearer token. */
  apiKey: string | undefined;
  faults: EmulatorFaults;
  tokenCounting: TokenCounting;
  /** The exact tokenizer when already loaded (always in `exact` mode). */
  tokenizer: Tokenizer | undefined;
  limiter: RateLimiter;
  /** Fault dice in [0, 1). */
  random: () => number;
  /** Monotonic clock in ms. */
  now: () => number;
}

/** How a request ends; `injected` marks errors that came from fault injection. */
export type EmbeddingOutcome =
  | { ok: false; error: EmulatorError; injected: boolean }
  | {
      ok: true;
      body: Uint8Array;
      model: ModelName;
      rows: number;
      tokens: number;
      shuffled: boolean;
      /** The monotonic time the quota was taken; stats use the same instant so their windows match the limiter's. */
      acceptedAt: number;
    };

/** A request that passed validation. */
interface ValidRequest {
  model: ModelName;
  texts: string[];
  dimension: number;
  outputType: OutputType;
  textType: TextType;
  instruct: string | undefined;
}

const fail = (error: EmulatorError, injected = false): EmbeddingOutcome => ({ ok: false, error, injected });

/**
 * Answers one embedding request the way DashScope does, in the order a gateway would check:
 * key, body, model, input, parameters, length, moderation, then throttling. Injected faults
 * (500, 429) are drawn after validation, and only accepted requests consume quota.
 */
export async function handleEmbeddingRequest(
  api: Api,
  authorization: string | undefined,
  rawBody: string,
  requestId: string,
  context: EmbeddingRequestContext,
): Promise<EmbeddingOutcome> {
  const bearer = /^Bearer\s+(\S.*)$/i.exec(authorization?.trim() ?? '')?.[1]?.trim();
  if (!bearer || (context.apiKey !== undefined && bearer !== context.apiKey)) return fail(EMULATOR_ERRORS.invalidApiKey);

  let body: unknown;
  try {
    body = JSON.parse(rawBody);
  } catch {
    return fail(EMULATOR_ERRORS.bodyNotJson);
  }
  if (!isRecord(body)) return fail(EMULATOR_ERRORS.bodyNotJson);

  const request = api === 'dashscope' ? parseNative(body) : parseCompat(body);
  if (!('texts' in request)) return fail(request);

  const spec = MODELS[request.model];
  let totalTokens = 0;
  for (const text of request.texts) {
    // v4 reports one token more per text than the BPE count (facts §6: an appended EOS, 2 samples).
    // Whether it counts toward the row limit is unconfirmed; the emulator takes the strict reading.
    const tokens = (await countTokens(text, spec.maxTokensPerText, context)) + spec.tokensAddedPerText;
    if (tokens > spec.maxTokensPerText) return fail(EMULATOR_ERRORS.textTooLong(spec.maxTokensPerText));
    totalTokens += tokens;
  }
  const { blockedWord } = context.faults;
  if (blockedWord && request.texts.some((text) => text.includes(blockedWord))) return fail(EMULATOR_ERRORS.dataInspection);

  const { failRate500, failRate429 } = context.faults;
  if (failRate500 > 0 && context.random() < failRate500) return fail(EMULATOR_ERRORS.internal, true);
  if (failRate429.requests > 0 && context.random() < failRate429.requests) return fail(EMULATOR_ERRORS.rateRequests, true);
  if (failRate429.tokens > 0 && context.random() < failRate429.tokens) return fail(EMULATOR_ERRORS.rateTokens, true);
  if (failRate429.burst > 0 && context.random() < failRate429.burst) return fail(EMULATOR_ERRORS.rateBurst, true);

  const acceptedAt = context.now();
  const verdict = context.limiter.tryAcquire(request.model, totalTokens, acceptedAt);
  if (verdict === 'requests') return fail(EMULATOR_ERRORS.rateRequests);
  if (verdict === 'tokens') return fail(EMULATOR_ERRORS.rateTokens);

  const items: ResponseItem[] = request.texts.map((text, index) => ({ index, ...emulatorEmbedding(text, request) }));
  const shuffled = items.length > 1 && context.faults.shuffleRate > 0 && context.random() < context.faults.shuffleRate;
  if (shuffled) shuffle(items, context.random);
  const responseBody =
    api === 'dashscope' ? nativeSuccessBody(items, totalTokens, requestId) : compatSuccessBody(items, request.model, totalTokens, requestId);
  return { ok: true, body: responseBody, model: request.model, rows: items.length, tokens: totalTokens, shuffled, acceptedAt };
}

/** Token count of one text per the counting mode; exact whenever the length limit is in doubt. */
async function countTokens(text: string, maxTokens: number, context: EmbeddingRequestContext): Promise<number> {
  if (context.tokenCounting === 'estimate' && !mayExceedTokens(text, maxTokens)) return Math.max(1, estimateTokens(text) - 1);
  const tokenizer = context.tokenizer ?? (await loadTokenizer());
  return tokenizer.countTokens(text);
}

function parseNative(body: Record<string, unknown>): ValidRequest | EmulatorError {
  const model = parseModel(body.model);
  if (typeof model !== 'string') return model;
  if (!isRecord(body.input)) return EMULATOR_ERRORS.emptyInput;
  const texts = parseTexts(body.input.texts, model);
  if (!Array.isArray(texts)) return texts;
  const parameters = isRecord(body.parameters) ? body.parameters : {};
  const dimension = parseDimension(parameters.dimension, model);
  if (typeof dimension !== 'number') return dimension;
  const outputType = parameters.output_type ?? 'dense';
  if (!OUTPUT_TYPES.includes(outputType as OutputType)) return EMULATOR_ERRORS.badOutputType;
  const textType = parameters.text_type ?? 'document';
  if (!TEXT_TYPES.includes(textType as TextType)) return EMULATOR_ERRORS.badTextType;
  const instruct = parameters.instruct ?? undefined;
  if (instruct !== undefined && typeof instruct !== 'string') return EMULATOR_ERRORS.badInstruct;
  return { model, texts, dimension, outputType: outputType as OutputType, textType: textType as TextType, instruct };
}

function parseCompat(body: Record<string, unknown>): ValidRequest | EmulatorError {
  const model = parseModel(body.model);
  if (typeof model !== 'string') return model;
  const texts = parseTexts(body.input, model);
  if (!Array.isArray(texts)) return texts;
  const dimension = parseDimension(body.dimensions, model);
  if (typeof dimension !== 'number') return dimension;
  // Only float is documented; openai-node asks for base64 by default and copes with floats, so
  // base64 is accepted and answered with floats.
  const encoding = body.encoding_format ?? 'float';
  if (encoding !== 'float' && encoding !== 'base64') return EMULATOR_ERRORS.badEncodingFormat;
  const outputType = body.output_type ?? 'dense';
  if (outputType === 'sparse' || outputType === 'dense&sparse') return EMULATOR_ERRORS.sparseOnCompat;
  if (outputType !== 'dense') return EMULATOR_ERRORS.badOutputType;
  return { model, texts, dimension, outputType: 'dense', textType: 'document', instruct: undefined };
}

function parseModel(value: unknown): ModelName | EmulatorError {
  if (typeof value !== 'string' || value.length === 0) return EMULATOR_ERRORS.emptyModel;
  return isModelName(value) ? value : EMULATOR_ERRORS.modelNotFound(value);
}

function parseTexts(value: unknown, model: ModelName): string[] | EmulatorError {
  if (value === undefined || value === null) return EMULATOR_ERRORS.emptyInput;
  const texts = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(texts) || !texts.every((text) => typeof text === 'string')) return EMULATOR_ERRORS.contentsType;
  if (texts.length === 0) return EMULATOR_ERRORS.emptyInput;
  const max = MODELS[model].maxTextsPerRequest;
  if (texts.length > max) return EMULATOR_ERRORS.batchTooLarge(max);
  if (texts.some((text) => !/\S/.test(text))) return EMULATOR_ERRORS.blankText;
  return texts;
}

function parseDimension(value: unknown, model: ModelName): number | EmulatorError {
  const spec = MODELS[model];
  if (value === undefined || value === null) return spec.defaultDimension;
  if (typeof value === 'number' && spec.dimensions.includes(value)) return value;
  const version = model.replace('text-embedding-', '');
  return EMULATOR_ERRORS.badDimension(version, [...spec.dimensions].sort((left, right) => left - right));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Fisher–Yates with the fault dice; an identical order is rotated so "shuffled" always shows. */
function shuffle(items: ResponseItem[], random: () => number): void {
  for (let index = items.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [items[index], items[other]] = [items[other]!, items[index]!];
  }
  if (items.every((item, position) => item.index === position)) items.push(items.shift()!);
}
