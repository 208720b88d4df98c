import { z } from 'zod';

/**
 * Job payloads: small, versioned JSON with no secrets (BullMQ stores job data in Redis as text).
 * The corpus job's options live once in its Redis record, not in every payload.
 */

const corpusRef = {
  v: z.literal(1),
  corpusJobId: z.string().min(1),
  generation: z.int().nonnegative(),
};

export const SplitCorpusPayload = z.object(corpusRef);
export type SplitCorpusPayload = z.infer<typeof SplitCorpusPayload>;

/** One line to embed: global row, source, 0-based line in source, id (JSONL), text. */
export const BatchLine = z.object({
  row: z.number().int().nonnegative(),
  source: z.string(),
  line: z.int().nonnegative(),
  id: z.string().nullable(),
  text: z.string().min(1),
});
export type BatchLine = z.infer<typeof BatchLine>;

export const EmbedBatchPayload = z.object({
  ...corpusRef,
  shard: z.int().nonnegative(),
  batch: z.int().nonnegative(),
  lines: z.array(BatchLine).min(1).max(10),
});
export type EmbedBatchPayload = z.infer<typeof EmbedBatchPayload>;

export const WriteShardPayload = z.object({ ...corpusRef, shard: z.int().nonnegative() });
export type WriteShardPayload = z.infer<typeof WriteShardPayload>;

export const FinalizeJobPayload = z.object(corpusRef);
export type FinalizeJobPayload = z.infer<typeof FinalizeJobPayload>;
