import { buffer } from 'node:stream/consumers';

import { type Table, tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';

import type { EmbeddingItem, SparseEntry } from '../embedding.js';
import { ReuseUnavailableError, StorageUnavailableError } from '../errors.js';
import type { PreviousIndex } from './previous-index.js';

/**
 * The vectors of given previous rows, copied out of the previous shards so the new shard can be
 * written with them instead of DashScope calls. Shards are read one at a time and only their
 * `dense` and `sparse` columns are decoded; those are nearly all of a shard's bytes, so a
 * ranged read would not save much here (the index, which reads none of them, does use ranges).
 *
 * @param positions positions in `index` (see PreviousIndex); duplicates are fine
 * @returns position → vectors
 */
export async function fetchPreviousVectors(index: PreviousIndex, positions: Iterable<number>): Promise<Map<number, EmbeddingItem>> {
  const byShard = new Map<number, { file: string; wanted: Array<{ position: number; rowInShard: number }> }>();
  for (const position of positions) {
    const { shard, file, rowInShard } = index.locate(position);
    let entry = byShard.get(shard);
    if (!entry) byShard.set(shard, (entry = { file, wanted: [] }));
    entry.wanted.push({ position, rowInShard });
  }
  const { store, prefix, manifest, location } = index.previous;
  const result = new Map<number, EmbeddingItem>();
  for (const [, { file, wanted }] of [...byShard].sort(([a], [b]) => a - b)) {
    let table: Table;
    try {
      const bytes = await buffer(await store.read(prefix + file));
      table = manifest.output_format === 'arrow' ? tableFromIPC(bytes) : tableFromIPC(readParquet(bytes, { columns: ['dense', 'sparse'] }).intoIPCStream());
    } catch (error) {
      if (error instanceof StorageUnavailableError) throw error;
      throw new ReuseUnavailableError(`${location}: shard ${file} unreadable: ${(error as Error).message}`, { cause: error });
    }
    const dense = table.getChild('dense');
    const sparse = table.getChild('sparse');
    for (const { position, rowInShard } of wanted) {
      if (rowInShard >= table.numRows) throw new ReuseUnavailableError(`${location}: shard ${file} has no row ${rowInShard}`);
      const denseValue = dense?.get(rowInShard) as { toArray(): Float32Array } | null | undefined;
      const sparseValue = sparse?.get(rowInShard) as { toArray(): Array<{ index: number; value: number; token: string }> } | null | undefined;
      result.set(position, {
        // Copies: the table's buffers go when it does.
        dense: denseValue ? Float32Array.from(denseValue.toArray()) : null,
        sparse: sparseValue ? sparseValue.toArray().map((entry): SparseEntry => ({ index: entry.index, value: entry.value, token: entry.token })) : null,
      });
    }
  }
  return result;
}
