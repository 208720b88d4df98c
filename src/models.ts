/**
 * What DashScope documents for each embedding model (../shared/dashscope-facts.md §3).
 * Limits are data so the client, the emulator and config validation read one table.
 */
export const MODEL_NAMES = ['text-embedding-v4', 'text-embedding-v3'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export const OUTPUT_TYPES = ['dense', 'sparse', 'dense&sparse'] as const;
export type OutputType = (typeof OUTPUT_TYPES)[number];

export const TEXT_TYPES = ['document', 'query'] as const;
export type TextType = (typeof TEXT_TYPES)[number];

export const APIS = ['dashscope', 'openai'] as const;
/** `dashscope`: the native endpoint (dense and sparse); `openai`: the OpenAI-compatible endpoint (dense only). */
export type Api = (typeof APIS)[number];

export interface ModelSpec {
  readonly name: ModelName;
  /** Dimensions the model accepts; the first is the default. */
  readonly dimensions: readonly number[];
  readonly defaultDimension: number;
  /** Rows per request (v3/v4: 10). */
  readonly maxTextsPerRequest: number;
  /** Tokens per row, as the service counts them (see tokensAddedPerText). */
  readonly maxTokensPerText: number;
  /**
   * Tokens the service adds to each text's BPE count: v4 reports one more (facts §6, 2 samples:
   * an appended end token). Whether they count toward maxTokensPerText is unconfirmed, so a text
   * is cut to leave them room (textTokenLimit).
   */
  readonly tokensAddedPerText: number;
  readonly supportsInstruct: boolean;
  /** USD per million tokens (Singapore list price). */
  readonly usdPerMillionTokens: number;
  /** Default account limits; DashScope publishes 6,000 QPM / 24M TPM for v3 (v4 unconfirmed, assumed equal). */
  readonly defaultRequestsPerMinute: number;
  readonly defaultTokensPerMinute: number;
}

export const MODELS: Readonly<Record<ModelName, ModelSpec>> = {
  'text-embedding-v4': {
    name: 'text-embedding-v4',
    dimensions: [2048, 1536, 1024, 768, 512, 256, 128, 64],
    defaultDimension: 1024,
    maxTextsPerRequest: 10,
    maxTokensPerText: 8192,
    tokensAddedPerText: 1,
    supportsInstruct: true,
    usdPerMillionTokens: 0.07,
    defaultRequestsPerMinute: 6000,
    defaultTokensPerMinute: 24_000_000,
  },
  'text-embedding-v3': {
    name: 'text-embedding-v3',
    dimensions: [1024, 768, 512],
    defaultDimension: 1024,
    maxTextsPerRequest: 10,
    maxTokensPerText: 8192,
    tokensAddedPerText: 0,
    supportsInstruct: false,
    usdPerMillionTokens: 0.07,
    defaultRequestsPerMinute: 6000,
    defaultTokensPerMinute: 24_000_000,
  },
};

/**
 * The most BPE tokens of a text embedq sends: the row limit less what the service adds. Cut at
 * exactly 8,192, a v4 line would be 8,193 to a service that counts its end token, and if that one
 * refuses such rows, every truncated line would be lost after splitting its batch down to it.
 */
export function textTokenLimit(model: ModelName): number {
  const spec = MODELS[model];
  return spec.maxTokensPerText - spec.tokensAddedPerText;
}

export function isModelName(value: string): value is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(value);
}

export const wantsDense = (outputType: OutputType): boolean => outputType !== 'sparse';
export const wantsSparse = (outputType: OutputType): boolean => outputType !== 'dense';
