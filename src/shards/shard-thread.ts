import { parentPort } from 'node:worker_threads';

import { decodeBatch } from './batch-codec.js';
import { encodeShard } from './encode-shard.js';
import type { OutputFormat, ShardRow } from './shard-row.js';

/** A request to the shard thread: the buffered batches of one shard. */
export interface ShardThreadRequest {
  id: number;
  batches: Uint8Array[];
  dimension: number;
  format: OutputFormat;
}

/** `upserts`: a Parquet file of the rows marked `upsert` (`_delta/`), when there are any. */
export type ShardThreadResponse =
  | { id: number; bytes: Uint8Array; rows: number; upserts?: Uint8Array }
  | { id: number; error: { message: string; stack?: string } };

// Decoding, sorting and encoding a 10,000-row shard takes ~0.5-1.5 s of CPU. Here it runs off the
// worker's event loop, so requests leave on their rate-gate slots and BullMQ locks keep renewing.
parentPort?.on('message', (request: ShardThreadRequest) => {
  void (async () => {
    try {
      const rows: ShardRow[] = request.batches.flatMap((batch) => decodeBatch(Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength)));
      rows.sort((a, b) => a.row - b.row);
      const bytes = await encodeShard(rows, { dimension: request.dimension, format: request.format });
      const marked = rows.filter((row) => row.upsert === true);
      // The delta is always Parquet (src/reuse/delta-writer.ts), whatever the shards' format.
      const upserts = marked.length > 0 ? await encodeShard(marked, { dimension: request.dimension, format: 'parquet' }) : undefined;
      const transfer = [bytes.buffer as ArrayBuffer, ...(upserts ? [upserts.buffer as ArrayBuffer] : [])];
      parentPort!.postMessage({ id: request.id, bytes, rows: rows.length, ...(upserts ? { upserts } : {}) } satisfies ShardThreadResponse, transfer);
    } catch (error) {
      const { message, stack } = error instanceof Error ? error : new Error(String(error));
      parentPort!.postMessage({ id: request.id, error: { message, stack } } satisfies ShardThreadResponse);
    }
  })();
});
