import type { EmbeddingParameters } from '../../src/embedding.js';

/** Request parameters for client tests: v4 on the native API, dimension 1024, dense&sparse, unless overridden. */
export const embeddingParameters = (overrides: Partial<EmbeddingParameters> = {}): EmbeddingParameters => ({
  model: 'text-embedding-v4',
  dimension: 1024,
  outputType: 'dense&sparse',
  textType: 'document',
  api: 'dashscope',
  ...overrides,
});
