import { buffer } from 'node:stream/consumers';

import { tableFromIPC } from 'apache-arrow';
import { parquetMetadataAsync, parquetRead, type AsyncBuffer } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';

import type { OutputFormat } from '../shards/shard-row.js';
import type { ObjectStore } from '../storage/object-store.js';

/**
 * Reads a few scalar columns of a shard without loading the rest: for Parquet, the footer and
 * those columns' chunks only (ranged reads through hyparquet), so indexing a previous output
 * costs a small fraction of its bytes. Arrow IPC files have no such layout and are read whole.
 *
 * Values come back as hyparquet decodes them: int64 as bigint, utf8 as string, null as null.
 */
export async function readShardColumns(
  store: ObjectStore,
  key: string,
  format: OutputFormat,
  columns: readonly string[],
): Promise<{ rows: number; columns: Map<string, unknown[]> }> {
  if (format === 'arrow') {
    const table = tableFromIPC(await buffer(await store.read(key)));
    const result = new Map<string, unknown[]>();
    for (const name of columns) {
      const column = table.getChild(name);
      if (!column) throw new Error(`${key}: no column "${name}"`);
      result.set(name, column.toArray() as unknown[]);
    }
    return { rows: table.numRows, columns: result };
  }
  const file = await asyncBufferOf(store, key);
  const metadata = await parquetMetadataAsync(file);
  const present = new Set(metadata.schema.map((element) => element.name));
  for (const name of columns) if (!present.has(name)) throw new Error(`${key}: no column "${name}"`);
  const rows = Number(metadata.num_rows);
  const result = new Map<string, unknown[]>(columns.map((name) => [name, new Array<unknown>(rows)]));
  await parquetRead({
    file,
    metadata,
    columns: [...columns],
    compressors,
    onChunk: ({ columnName, columnData, rowStart, rowEnd }) => {
      const target = result.get(columnName);
      if (!target) return;
      for (let row = rowStart; row < rowEnd; row++) target[row] = columnData[row - rowStart];
    },
  });
  return { rows, columns: result };
}

/** An object as hyparquet's AsyncBuffer: ranged reads when the store has them, else one whole read. */
async function asyncBufferOf(store: ObjectStore, key: string): Promise<AsyncBuffer> {
  const stat = await store.stat(key);
  if (!stat) throw new Error(`${key}: no such object`);
  if (!store.readRange) {
    const bytes = await buffer(await store.read(key));
    return { byteLength: bytes.length, slice: (start, end) => toArrayBuffer(bytes.subarray(start, end)) };
  }
  const readRange = store.readRange.bind(store);
  return {
    byteLength: stat.sizeBytes,
    slice: async (start, end) => toArrayBuffer(await readRange(key, start, end ?? stat.sizeBytes)),
  };
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
