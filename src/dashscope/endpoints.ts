import type { Api } from '../models.js';

/** The native DashScope text-embedding path (dense and sparse output). */
export const NATIVE_EMBEDDING_PATH = '/api/v1/services/embeddings/text-embedding/text-embedding';

/** The OpenAI-compatible embeddings path (dense output only). */
export const COMPAT_EMBEDDING_PATH = '/compatible-mode/v1/embeddings';

/** The full URL of the embedding endpoint for an API flavour; `baseUrl` is scheme and host. */
export function embeddingUrl(baseUrl: string, api: Api): string {
  return baseUrl.replace(/\/+$/, '') + (api === 'dashscope' ? NATIVE_EMBEDDING_PATH : COMPAT_EMBEDDING_PATH);
}

/** Body of a native request, as the DashScope SDKs send it. */
export interface NativeEmbeddingRequest {
  model: string;
  input: { texts: string[] };
  parameters: {
    dimension: number;
    text_type: string;
    output_type: string;
    instruct?: string;
  };
}

/** Body of an OpenAI-compatible request. DashScope documents only `float` encoding. */
export interface CompatEmbeddingRequest {
  model: string;
  input: string[];
  dimensions: number;
  encoding_format: 'float';
}
