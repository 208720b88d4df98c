import { Buffer } from 'node:buffer';

import { decodeBatch } from './batch-codec.js';
import type { ShardRow } from './shard-row.js';

/** Byte offset of the first row's `row` number in a batch buffer (after the 12-byte header). */
const FIRST_ROW_OFFSET = 12;

/**
 * The rows of a shard's batches in `row` order, `groupRows` at a time, decoding each batch only
 * when its rows are due and dropping it from `batches` once decoded: the whole shard is never
 * decoded at once, and the input buffers are released as the encoding goes.
 *
 * A batch holds one request's lines in input order, and the split step gives each batch a range
 * of rows after the previous one's, so ordering the batches by their first row orders all rows.
 * Anything else is a bug upstream and throws rather than write a misordered shard.
 */
export function* shardRowGroups(batches: Array<Uint8Array | undefined>, groupRows: number): Generator<ShardRow[]> {
  const order = batches
    .map((batch, index) => ({ index, first: firstRow(batch!) }))
    .sort((a, b) => a.first - b.first)
    .map((entry) => entry.index);
  let group: ShardRow[] = [];
  let last = -1;
  for (const index of order) {
    const batch = batches[index]!;
    batches[index] = undefined;
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
  if (group.length > 0) yield group;
}

/** The first row number of a batch, or -1 for an empty one (it sorts first and adds nothing). */
function firstRow(batch: Uint8Array): number {
  if (batch.byteLength < FIRST_ROW_OFFSET + 8) return -1;
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  return view.getUint32(4, true) === 0 ? -1 : view.getFloat64(FIRST_ROW_OFFSET, true);
}
