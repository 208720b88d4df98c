import type { EmbeddingParameters } from '../embedding.js';
import { RequestInvalidError } from '../errors.js';
import { isModelName, MODELS, OUTPUT_TYPES, TEXT_TYPES, textTokenLimit, wantsSparse } from '../models.js';
import { mayExceedTokens } from '../tokens/count-tokens.js';
import { fitTokensOffThread } from '../tokens/token-worker.js';

/** A text counts as blank unless it has a character that String#trim would keep (no allocation). */
const NON_BLANK = /\S/;

/**
 * Checks a request against the documented limits before it is sent (facts §3), so a caller's bug
 * costs no quota and gets a precise message instead of a provider 400. Throws RequestInvalidError.
 *
 * Token lengths are checked exactly, but only for texts with more UTF-8 bytes than the limit (a
 * byte-level BPE never makes more tokens than bytes), and on the token thread.
 */
export async function validateRequest(texts: readonly string[], parameters: EmbeddingParameters): Promise<void> {
  validateParameters(parameters);
  const model = MODELS[parameters.model];
  if (texts.length === 0 || texts.length > model.maxTextsPerRequest) {
    throw new RequestInvalidError(`${parameters.model} takes 1 to ${model.maxTextsPerRequest} texts per request, got ${texts.length}`);
  }
  const long: number[] = [];
  for (let index = 0; index < texts.length; index++) {
    const text = texts[index];
    if (typeof text !== 'string') throw new RequestInvalidError(`text ${index} is not a string`);
    if (!NON_BLANK.test(text)) {
      throw new RequestInvalidError(`text ${index} is empty or whitespace only; DashScope rejects blank texts`);
    }
    if (mayExceedTokens(text, textTokenLimit(parameters.model))) long.push(index);
  }
  if (long.length === 0) return;
  for (const index of long) {
    // On a worker thread, and only as much of the text as decides it: a long line takes seconds.
    const limit = textTokenLimit(parameters.model);
    const fit = await fitTokensOffThread(texts[index] as string, limit);
    if (fit.exceeded) {
      const count = fit.exact ? `${fit.tokens}` : `more than ${limit}`;
      throw new RequestInvalidError(`text ${index} has ${count} tokens; ${parameters.model} takes at most ${limit} per text (${model.maxTokensPerText} with the ${model.tokensAddedPerText} it adds)`);
    }
  }
}

/** The checks that depend only on the parameters (shared by every request of a job). */
export function validateParameters(parameters: EmbeddingParameters): void {
  const { model: modelName, dimension, outputType, textType, instruct, api } = parameters;
  if (!isModelName(modelName)) throw new RequestInvalidError(`unknown model ${JSON.stringify(modelName)}`);
  const model = MODELS[modelName];
  if (!model.dimensions.includes(dimension)) {
    throw new RequestInvalidError(`dimension ${dimension} is not offered by ${modelName}; choose one of ${model.dimensions.join(', ')}`);
  }
  if (!OUTPUT_TYPES.includes(outputType)) throw new RequestInvalidError(`unknown output type ${JSON.stringify(outputType)}`);
  if (!TEXT_TYPES.includes(textType)) throw new RequestInvalidError(`unknown text type ${JSON.stringify(textType)}`);
  if (api !== 'dashscope' && api !== 'openai') throw new RequestInvalidError(`unknown api ${JSON.stringify(api)}`);
  if (instruct !== undefined) {
    if (!model.supportsInstruct) throw new RequestInvalidError(`instruct is supported by text-embedding-v4 only, not ${modelName}`);
    if (api !== 'dashscope') throw new RequestInvalidError('instruct needs the native DashScope API (--api dashscope)');
    if (instruct.trim().length === 0) throw new RequestInvalidError('instruct is blank');
  }
  if (api === 'openai') {
    if (wantsSparse(outputType)) {
      throw new RequestInvalidError(`output type ${outputType} needs the native DashScope API (--api dashscope); the compatible mode returns dense vectors only`);
    }
    // The compatible mode documents no text_type; sending queries as documents would be silent.
    if (textType !== 'document') {
      throw new RequestInvalidError('text type query needs the native DashScope API (--api dashscope)');
    }
  }
}
