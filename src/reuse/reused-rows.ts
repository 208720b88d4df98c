import { ReuseUnavailableError } from '../errors.js';
import type { ShardRow } from '../shards/shard-row.js';
import type { PreviousBatch } from './previous-batch.js';
import type { PreviousShards } from './previous-shards.js';
import { fileOrder, previousRows } from './previous-vectors.js';
import type { ReusedLine } from './reuse-list.js';

/**
 * A row of the new shard whose text and vectors are row `at` of a previous shard's read batch: its
 * row number, source, line, id and content key come from `line`. It stays in the batch's buffers
 * until the row-group builder copies it (src/shards/row-group-builder.ts).
 */
export interface ReusedRow {
  line: ReusedLine;
  batch: PreviousBatch;
  at: number;
}

/** The reused rows of a shard, a few hundred at a time. */
export interface ReusedRows {
  /**
   * Whether the rows ascend by `row` throughout (previous rows are read in file order, which is
   * row order unless lines moved between the runs): then they can be merged into the embedded
   * batches as a stream (src/shards/merge-rows.ts); else the shard is sorted whole.
   */
  inRowOrder: boolean;
  groups: AsyncIterable<ReusedRow[]>;
}

/**
 * The rows of a shard's reuse list, found in the previous output the split matched them against.
 * Each previous row's `content_hash` must still be the line's content key: if the previous output
 * was replaced or changed since the split, the job fails clearly instead of writing someone else's
 * vectors.
 */
export function reusedRows(lines: readonly ReusedLine[], previous: PreviousShards): ReusedRows {
  const readOrder = fileOrder(lines);
  const inRowOrder = readOrder.every((line, i) => i === 0 || lines[readOrder[i - 1]!]!.row < lines[line]!.row);
  async function* groups(): AsyncGenerator<ReusedRow[]> {
    for await (const found of previousRows(previous, lines, readOrder)) {
      yield found.map(({ ref, batch, at }): ReusedRow => {
        const line = lines[ref]!;
        if (!batch.hashIs(at, line.hash)) {
          const file = previous.files[line.shard] ?? `shard ${line.shard}`;
          throw new ReuseUnavailableError(
            `${previous.location}: ${file} row ${line.rowInShard} no longer holds the text this job matched for row ${line.row} (${line.source}:${line.line + 1}); the previous output changed during the run. embedq retry embeds the rest of the job without reusing it (no _delta/)`,
          );
        }
        return { line, batch, at };
      });
    }
  }
  return { inRowOrder, groups: groups() };
}

/** A reused row decoded into a shard row (shards sorted whole, and the delta's rows). */
export function shardRowOf({ line, batch, at }: ReusedRow): ShardRow {
  const { text, dense, sparse } = batch.row(at);
  return { row: line.row, source: line.source, line: line.line, id: line.id, text, dense, sparse, contentHash: line.hash.toString('hex'), ...(line.upsert ? { upsert: true } : {}) };
}
