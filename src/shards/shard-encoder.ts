import type { Worker } from 'node:worker_threads';

import { startThread } from '../threads/start-thread.js';

import type { OutputFormat } from './shard-row.js';
import type { ShardThreadMemory, ShardThreadRequest, ShardThreadResponse } from './shard-thread.js';

export interface EncodedShard {
  bytes: Uint8Array;
  rows: number;
  upserts?: Uint8Array | undefined;
}

/**
 * Encodes shards on one background thread per process (see shard-thread.ts for why). The thread
 * starts on first use and is unref'd, so it never keeps a process alive.
 */
export class ShardEncoder {
  private worker: Worker | undefined;
  private nextId = 0;
  /** The thread's memory after its last shard (for the worker's memory log line and the bench). */
  lastThreadMemory: ShardThreadMemory | undefined;
  private readonly pending = new Map<number, { resolve: (value: EncodedShard) => void; reject: (error: Error) => void }>();

  /**
   * Decodes the batches, sorts rows by `row`, and returns the shard file's bytes, plus a Parquet
   * file of the rows marked `upsert` (the shard's `_delta/` upserts) when any is.
   */
  encode(batches: readonly Buffer[], options: { dimension: number; format: OutputFormat; interleaved?: boolean }): Promise<EncodedShard> {
    const worker = this.thread();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      // Each batch is copied once into a buffer of its own and that buffer is transferred, not
      // cloned: Redis reply buffers may share memory with others, and a structured clone of ~60 MB
      // would hold a serialized copy as well as the thread's.
      const copies = batches.map((batch) => new Uint8Array(batch));
      worker.postMessage(
        { id, batches: copies, dimension: options.dimension, format: options.format, interleaved: options.interleaved === true } satisfies ShardThreadRequest,
        copies.map((copy) => copy.buffer),
      );
    });
  }

  /**
   * Starts the thread now: loading Arrow and compiling parquet-wasm costs ~0.5 s of CPU, better
   * spent at worker start than in the middle of the first shard, next to requests on their slots.
   */
  warm(): void {
    this.thread();
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = startThread(new URL('./shard-thread.js', import.meta.url), new URL('./shard-thread.ts', import.meta.url));
    worker.unref();
    worker.on('message', (response: ShardThreadResponse) => {
      const waiter = this.pending.get(response.id);
      if (!waiter) return;
      this.pending.delete(response.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in response) {
        const error = new Error(`shard encoding failed: ${response.error.message}`);
        error.stack = response.error.stack ?? error.stack;
        waiter.reject(error);
      } else {
        this.lastThreadMemory = response.memory;
        waiter.resolve({ bytes: response.bytes, rows: response.rows, upserts: response.upserts });
      }
    });
    worker.on('error', (error) => this.failAll(error));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      if (this.pending.size > 0) this.failAll(new Error(`shard encoding thread exited with code ${code}`));
    });
    this.worker = worker;
    return worker;
  }

  private failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}
