import { parentPort } from 'node:worker_threads';

import { decodeBatch } from './batch-codec.js';
import { encodeParquetRowGroups, encodeShard, PARQUET_ROW_GROUP_ROWS } from './encode-shard.js';
import { lowerThisThreadPriority } from '../threads/background-priority.js';
import { shardRowGroups } from './shard-row-groups.js';
import { wasmMemoryBytes } from './wasm-memory.js';
import type { OutputFormat, ShardRow } from './shard-row.js';

/** A request to the shard thread: the buffered batches of one shard. */
export interface ShardThreadRequest {
  id: number;
  /** Released one by one as the encoding goes (the thread owns this copy). */
  batches: Array<Uint8Array | undefined>;
  dimension: number;
  format: OutputFormat;
  /**
   * Batches whose rows interleave (reused rows copied from a previous output sit between embedded
   * ones): decoded whole and sorted, since row groups can be streamed only from batches that each
   * hold a run of rows no other batch enters.
   */
  interleaved?: boolean;
}

/** The thread's own memory after a shard: its JS heap and parquet-wasm's WebAssembly memory. */
export interface ShardThreadMemory {
  heapUsed: number;
  wasmBytes: number;
}

/** `upserts`: a Parquet file of the rows marked `upsert` (`_delta/`), when there are any. */
export type ShardThreadResponse =
  | { id: number; bytes: Uint8Array; rows: number; memory: ShardThreadMemory; upserts?: Uint8Array }
  | { id: number; error: { message: string; stack?: string } };

/** Passes row groups through, showing each to `see` (counting, picking the delta's rows). */
function* watching<T extends readonly unknown[]>(groups: Iterator<T>, see: (group: T) => void): Generator<T> {
  for (let next = groups.next(); !next.done; next = groups.next()) {
    see(next.value);
    yield next.value;
  }
}

// Decoding, sorting and encoding a 10,000-row shard takes ~0.5-1.5 s of CPU. Here it runs off the
// worker's event loop, and at a lower CPU priority, so requests leave on their rate-gate slots and
// BullMQ locks keep renewing.
if (parentPort) lowerThisThreadPriority();
parentPort?.on('message', (request: ShardThreadRequest) => {
  void (async () => {
    try {
      let bytes: Uint8Array;
      let count = 0;
      // Rows of the delta (`upsert`: id new or changed); few in an incremental run, none otherwise.
      const marked: ShardRow[] = [];
      const see = (rows: readonly ShardRow[]): void => {
        count += rows.length;
        for (const row of rows) if (row.upsert === true) marked.push(row);
      };
      if (request.format === 'parquet' && request.interleaved !== true) {
        // Row group by row group: only one group's rows and Arrow data exist at a time.
        const groups = shardRowGroups(request.batches, PARQUET_ROW_GROUP_ROWS);
        bytes = await encodeParquetRowGroups(watching(groups, see), request.dimension);
      } else {
        const rows: ShardRow[] = request.batches.flatMap((batch) => decodeBatch(Buffer.from(batch!.buffer, batch!.byteOffset, batch!.byteLength)));
        rows.sort((a, b) => a.row - b.row);
        bytes = await encodeShard(rows, { dimension: request.dimension, format: request.format });
        see(rows);
      }
      // The delta is always Parquet (src/reuse/delta-writer.ts), whatever the shards' format.
      const upserts = marked.length > 0 ? await encodeShard(marked, { dimension: request.dimension, format: 'parquet' }) : undefined;
      const memory = { heapUsed: process.memoryUsage().heapUsed, wasmBytes: wasmMemoryBytes() };
      const transfer = [bytes.buffer as ArrayBuffer, ...(upserts ? [upserts.buffer as ArrayBuffer] : [])];
      parentPort!.postMessage({ id: request.id, bytes, rows: count, memory, ...(upserts ? { upserts } : {}) } satisfies ShardThreadResponse, transfer);
    } catch (error) {
      const { message, stack } = error instanceof Error ? error : new Error(String(error));
      parentPort!.postMessage({ id: request.id, error: { message, stack } } satisfies ShardThreadResponse);
    }
  })();
});
