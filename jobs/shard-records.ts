/** The records a shard's Redis buffer holds besides its batches (shard-buffer.ts writes them, shard-buffer-read.ts reads them). */

/** One line that could not be embedded, as written to `_errors.jsonl`. */
export interface ErrorRecord {
  row: number;
  source: string;
  line: number;
  /** The line's `--id-field` value, when the run has one and the line was read far enough to know it. */
  id?: string;
  code: string;
  message: string;
}

/** A shard's `--reuse` counts: rows reused; with `--id-field`, ids new, changed and unchanged. */
export interface ReuseCounts {
  reused: number;
  new: number;
  changed: number;
  unchanged: number;
}

export const NO_REUSE: ReuseCounts = { reused: 0, new: 0, changed: 0, unchanged: 0 };

/** What the splitter records for a shard when it has queued all its batches (the `meta` field). */
export interface ShardMeta {
  firstRow: number;
  lastRow: number;
  inputErrors: ErrorRecord[];
  blank: number;
  truncated: number;
  batches: number;
  reuse?: ReuseCounts;
}
