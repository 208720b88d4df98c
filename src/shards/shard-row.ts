import type { SparseEntry } from '../embedding.js';

/** One output row: the columns of a shard (DESIGN "Contract"). */
export interface ShardRow {
  /** 0-based index of the line over the whole input; blank lines keep their number. */
  row: number;
  /** Object key or file path the line came from. */
  source: string;
  /** 0-based line number inside `source`. */
  line: number;
  /** The `--id-field` value for JSON Lines, else null. */
  id: string | null;
  /** The text that was embedded (after truncation, if any). */
  text: string;
  /** Dense vector of `dimension` floats; null when the output type is `sparse`. */
  dense: Float32Array | null;
  /** Sparse vector; null when the output type is `dense`. */
  sparse: SparseEntry[] | null;
  /** Content key of text + embedding parameters, 64 hex digits (src/reuse); null or absent when unknown. */
  contentHash?: string | null;
  /**
   * Not a column: with `--reuse --id-field`, the row's id is new or its text changed, so the shard
   * writer also puts it in `_delta/upserts-NNNNN.parquet`.
   */
  upsert?: boolean;
}

export type OutputFormat = 'parquet' | 'arrow';
