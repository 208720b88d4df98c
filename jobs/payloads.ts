import * as z from 'zod';

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

/** One line to embed: global row, source, 0-based line in source, id (JSONL), text, content key. */
export const BatchLine = z.object({
  row: z.number().int().nonnegative(),
  source: z.string(),
  line: z.int().nonnegative(),
  id: z.string().nullable(),
  text: z.string().min(1),
  /** The line's content key (src/reuse/content-key.ts), 64 hex digits: the row's `content_hash`. */
  hash: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** `--reuse --id-field`: the id is new or its text changed, so the row also goes to `_delta/` upserts. */
  upsert: z.literal(true).optional(),
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
