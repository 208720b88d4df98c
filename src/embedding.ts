import type { Api, ModelName, OutputType, TextType } from './models.js';

/** One entry of a sparse vector, exactly as DashScope returns it. */
export interface SparseEntry {
  index: number;
  value: number;
  token: string;
}

/** The parameters of an embedding request that shape the vectors (they are part of a job's spec). */
export interface EmbeddingParameters {
  model: ModelName;
  dimension: number;
  outputType: OutputType;
  textType: TextType;
  /** Task instruction; text-embedding-v4 on the native API only. */
  instruct?: string | undefined;
  api: Api;
}

/** The vectors of one input text. `dense` is null when output type is `sparse`, `sparse` when it is `dense`. */
export interface EmbeddingItem {
  dense: Float32Array | null;
  sparse: SparseEntry[] | null;
}

export interface EmbeddingResult {
  /** One item per input text, in input order (placed by `text_index`, never by array order). */
  items: EmbeddingItem[];
  /** `usage.total_tokens` as the server reported it. */
  totalTokens: number;
  requestId: string;
}

/** Per-call options of {@link EmbeddingClient.embed}. */
export interface EmbedOptions {
  /** Aborts the request; its reason is rethrown as is. */
  signal?: AbortSignal | undefined;
  /** The corpus job the request is for, so metrics count its requests and 429s (Default: none). */
  corpusJobId?: string | undefined;
}

/** Turns at most 10 texts into vectors with one DashScope request. */
export interface EmbeddingClient {
  embed(texts: readonly string[], parameters: EmbeddingParameters, options?: EmbedOptions): Promise<EmbeddingResult>;
  close(): Promise<void>;
}
