import { ReuseUnavailableError } from '../errors.js';
import type { ShardRow } from '../shards/shard-row.js';
import type { PreviousShards } from './previous-shards.js';
import { fileOrder, previousRows, type FoundRow } from './previous-vectors.js';
import type { ReusedLine } from './reuse-list.js';

/** The reused rows of a shard, a few hundred at a time. */
export interface ReusedRows {
  /**
   * Whether the rows ascend by `row` throughout (previous rows are read in file order, which is
   * row order unless lines moved between the runs): then they can be merged into the embedded
   * batches as a stream (src/shards/merge-rows.ts); else the shard is sorted whole.
   */
  inRowOrder: boolean;
  groups: AsyncIterable<ShardRow[]>;
}

/**
 * The rows of a shard's reuse list, with their vectors copied from the previous output the split
 * matched them against. Each copied row's `content_hash` must still be the line's content key: if
 * the previous output was replaced or changed since the split, the job fails clearly instead of
 * writing someone else's vectors.
 */
export function reusedRows(lines: readonly ReusedLine[], previous: PreviousShards): ReusedRows {
  const readOrder = fileOrder(lines);
  const inRowOrder = readOrder.every((line, i) => i === 0 || lines[readOrder[i - 1]!]!.row < lines[line]!.row);
  const rowOf = ({ ref, vectors }: FoundRow): ShardRow => {
    const line = lines[ref]!;
    const hash = line.hash.toString('hex');
    if (vectors.contentHash !== hash) {
      const file = previous.files[line.shard] ?? `shard ${line.shard}`;
      throw new ReuseUnavailableError(
        `${previous.location}: ${file} row ${line.rowInShard} no longer holds the text this job matched for row ${line.row} (${line.source}:${line.line + 1}); the previous output changed during the run. Retry the job without --reuse, or with an unchanged previous output`,
      );
    }
    return { row: line.row, source: line.source, line: line.line, id: line.id, text: vectors.text, dense: vectors.dense, sparse: vectors.sparse, contentHash: hash, ...(line.upsert ? { upsert: true } : {}) };
  };
  async function* groups(): AsyncGenerator<ShardRow[]> {
    for await (const found of previousRows(previous, lines, readOrder)) yield found.map(rowOf);
  }
  return { inRowOrder, groups: groups() };
}
