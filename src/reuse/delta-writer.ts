import { DELETES_FILE } from '../output/layout.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { PreviousErrorIds } from './previous-errors.js';
import type { PreviousIndex } from './previous-index.js';
import { readShardColumns } from './shard-columns.js';

/**
 * `_delta/` of a `--reuse --id-field` run, for a vector store to apply:
 *   `upserts-NNNNN.parquet`  the shard columns, rows whose id is new or whose text changed
 *                            (one file per output shard that has any; NNNNN is that shard),
 *                            written by the shard thread with its shard (src/shards/shard-thread.ts)
 *   `deletes.jsonl`          one `{"id": …}` per id of the previous output that is gone now,
 *                            written here by the split once the input is read
 */

/**
 * Writes `deletes.jsonl` from the ids the run never classified (PreviousIndex.classifyId), reading
 * only the `id` column of the previous shards that hold any; then the ids of the previous
 * output's error records the provider refused that the run never classified either
 * (PreviousErrorIds: that run had no row for them, and a store still holds their older vector).
 * Returns how many ids it wrote.
 */
export async function writeDeletes(output: { store: ObjectStore; prefix: string }, index: PreviousIndex, errorIds: PreviousErrorIds): Promise<number> {
  const byShard = new Map<string, number[]>();
  for (const position of index.unseenIdPositions()) {
    const { file, rowInShard } = index.locate(position);
    let rows = byShard.get(file);
    if (!rows) byShard.set(file, (rows = []));
    rows.push(rowInShard);
  }
  const { store, prefix, manifest } = index.previous;
  let written = 0;
  // Streamed a previous shard at a time: joined into one string, millions of ids would not fit.
  async function* deletes(): AsyncGenerator<Uint8Array> {
    for (const [file, rows] of byShard) {
      const ids = (await readShardColumns(store, prefix + file, manifest.output_format, ['id'])).columns.get('id')!;
      yield Buffer.from(rows.map((row) => `${JSON.stringify({ id: String(ids[row]) })}\n`).join(''));
      written += rows.length;
    }
    const gone: string[] = [];
    await errorIds.unseen((id) => index.hasRowWithId(id), (id) => gone.push(`${JSON.stringify({ id })}\n`));
    if (gone.length > 0) yield Buffer.from(gone.join(''));
    written += gone.length;
  }
  await output.store.writeStream(output.prefix + DELETES_FILE, deletes());
  return written;
}
