import { Buffer } from 'node:buffer';

import { decodeBatch } from './batch-codec.js';
import type { ShardRow } from './shard-row.js';

/**
 * The rows of a shard's batches in `row` order, `groupRows` at a time, decoding each batch only
 * when its rows are due: neither the whole shard's batches nor its decoded rows are ever held at
 * once, only the slice being read and the group being built.
 *
 * `slices` hands the batches over a few at a time in batch-number order. The split step numbers a
 * shard's batches in input order and gives each a range of rows after the previous one's, so that
 * order is the rows' order. Anything else is a bug upstream and throws rather than write a
 * misordered shard. (Batches whose rows interleave, reused rows beside embedded ones, are sorted
 * whole instead: see shard-thread.ts.)
 */
export async function* shardRowGroups(slices: AsyncIterable<readonly Uint8Array[]>, groupRows: number): AsyncGenerator<ShardRow[]> {
  let group: ShardRow[] = [];
  let last = -1;
  for await (const slice of slices) {
    for (const batch of slice) {
      for (const row of decodeBatch(Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength))) {
        if (row.row <= last) throw new Error(`shard batches overlap or are out of order at row ${row.row}`);
        last = row.row;
        group.push(row);
        if (group.length === groupRows) {
          yield group;
          group = [];
        }
      }
    }
  }
  if (group.length > 0) yield group;
}

/** Sorted rows handed out `groupRows` at a time (the path for batches whose rows interleave). */
export async function* groupsOf(rows: readonly ShardRow[], groupRows: number): AsyncGenerator<readonly ShardRow[]> {
  for (let offset = 0; offset < rows.length; offset += groupRows) yield rows.slice(offset, offset + groupRows);
}
