import { buffer } from 'node:stream/consumers';

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
  const result = new Map<string, unknown[]>(columns.map((name) => [name, []]));
  const rows = await scanShardColumns(store, key, format, columns, (name, rowStart, values) => {
    const target = result.get(name)!;
    for (let i = 0; i < values.length; i++) target[rowStart + i] = values[i];
  });
  return { rows, columns: result };
}

/**
 * The streaming form: `onValues(column, firstRow, values)` is called per column chunk (a Parquet
 * row group), so a caller can fold values into typed arrays without holding a shard's strings.
 * Returns the shard's row count; an exception of `onValues` ends the scan and is thrown.
 */
export async function scanShardColumns(
  store: ObjectStore,
  key: string,
  format: OutputFormat,
  columns: readonly string[],
  onValues: (column: string, rowStart: number, values: ArrayLike<unknown>) => void,
): Promise<number> {
  if (format === 'arrow') {
    // Loaded only for Arrow outputs: Arrow costs a worker's main thread ~19 MB.
    const { tableFromIPC } = await import('apache-arrow');
    const table = tableFromIPC(await buffer(await store.read(key)));
    for (const name of columns) {
      const column = table.getChild(name);
      if (!column) throw new Error(`${key}: no column "${name}"`);
      onValues(name, 0, column.toArray() as ArrayLike<unknown>);
    }
    return table.numRows;
  }
  const file = await asyncBufferOf(store, key);
  const metadata = await parquetMetadataAsync(file);
  const present = new Set(metadata.schema.map((element) => element.name));
  for (const name of columns) if (!present.has(name)) throw new Error(`${key}: no column "${name}"`);
  const wanted = new Set(columns);
  // hyparquet calls onChunk from a promise callback whose rejection it drops: a throw there was an
  // unhandled rejection, which ends a Node process (a previous output whose manifest counted fewer
  // rows than a shard held crashed every worker that took the job). Kept and thrown after the read.
  let failed: { error: unknown } | undefined;
  await parquetRead({
    file,
    metadata,
    columns: [...columns],
    compressors,
    onChunk: ({ columnName, columnData, rowStart }) => {
      if (failed || !wanted.has(columnName)) return;
      try {
        onValues(columnName, rowStart, columnData as ArrayLike<unknown>);
      } catch (error) {
        failed = { error };
      }
    },
  });
  if (failed) throw failed.error;
  return Number(metadata.num_rows);
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
