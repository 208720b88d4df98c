import { buffer } from 'node:stream/consumers';

import { type Table, tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';

import type { EmbeddingItem, SparseEntry } from '../embedding.js';
import { ReuseUnavailableError, StorageUnavailableError } from '../errors.js';
import type { PreviousOutput } from './previous-output.js';

/** Where a previous row is: its shard (index in the previous manifest) and its row in that file. */
export interface PreviousRowRef {
  shard: number;
  rowInShard: number;
}

/** A previous row's vectors, with its text and content hash (the writer checks the hash). */
export interface PreviousRowVectors extends EmbeddingItem {
  text: string;
  contentHash: string | null;
}

/**
 * The vectors of given previous rows, copied out of the previous shards so the new shard can be
 * written with them instead of DashScope calls. It needs only the previous manifest, not the
 * index: the split step turns index positions into refs (PreviousIndex.locate), so the shard
 * writer never builds an index. Shards are read one at a time and only their `text`,
 * `dense`, `sparse` and `content_hash` columns are decoded; those are nearly all of a shard's bytes, so a ranged read would
 * not save much here (the index, which reads none of them, does use ranges).
 *
 * @returns the vectors of `refs[i]` at index i
 */
export async function fetchPreviousVectors(previous: PreviousOutput, refs: readonly PreviousRowRef[]): Promise<PreviousRowVectors[]> {
  const byShard = new Map<number, number[]>();
  refs.forEach((ref, i) => {
    let wanted = byShard.get(ref.shard);
    if (!wanted) byShard.set(ref.shard, (wanted = []));
    wanted.push(i);
  });
  const { store, prefix, manifest, location } = previous;
  const result = new Array<PreviousRowVectors>(refs.length);
  for (const [shard, wanted] of [...byShard].sort(([a], [b]) => a - b)) {
    const file = manifest.shards[shard]?.file;
    if (file === undefined) throw new ReuseUnavailableError(`${location}: the manifest has no shard ${shard}`);
    let table: Table;
    try {
      const bytes = await buffer(await store.read(prefix + file));
      table = manifest.output_format === 'arrow' ? tableFromIPC(bytes) : tableFromIPC(readParquet(bytes, { columns: ['text', 'dense', 'sparse', 'content_hash'] }).intoIPCStream());
    } catch (error) {
      if (error instanceof StorageUnavailableError) throw error;
      throw new ReuseUnavailableError(`${location}: shard ${file} unreadable: ${(error as Error).message}`, { cause: error });
    }
    const dense = table.getChild('dense');
    const sparse = table.getChild('sparse');
    const texts = table.getChild('text');
    const hashes = table.getChild('content_hash');
    for (const i of wanted) {
      const { rowInShard } = refs[i]!;
      if (rowInShard >= table.numRows) throw new ReuseUnavailableError(`${location}: shard ${file} has no row ${rowInShard}`);
      const denseValue = dense?.get(rowInShard) as { toArray(): Float32Array } | null | undefined;
      const sparseValue = sparse?.get(rowInShard) as { toArray(): Array<{ index: number; value: number; token: string }> } | null | undefined;
      result[i] = {
        text: String(texts?.get(rowInShard) ?? ''),
        contentHash: (hashes?.get(rowInShard) as string | null | undefined) ?? null,
        // Copies: the table's buffers go when it does.
        dense: denseValue ? Float32Array.from(denseValue.toArray()) : null,
        sparse: sparseValue ? sparseValue.toArray().map((entry): SparseEntry => ({ index: entry.index, value: entry.value, token: entry.token })) : null,
      };
    }
  }
  return result;
}
