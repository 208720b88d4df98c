import type { Worker } from 'node:worker_threads';

import { ReuseUnavailableError } from '../errors.js';
import { BatchCodecError } from './batch-codec.js';
import type { PreviousShards } from '../reuse/previous-shards.js';
import { startThread } from '../threads/start-thread.js';

import { ChunkChannel } from './chunk-channel.js';

import type { OutputFormat } from './shard-row.js';
import type { ShardThreadMemory, ShardThreadRequest, ShardThreadResponse } from './shard-thread-messages.js';

/** Options of {@link ShardEncoder.encode}. */
export interface ShardEncodeOptions {
  dimension: number;
  format: OutputFormat;
  /**
   * `--reuse`: the shard's reuse list (src/reuse/reuse-list.ts) and the previous output's shards.
   * The thread copies the reused rows in; it asks for each previous shard's local copy, made here.
   */
  reuse?: { list: Uint8Array; previous: PreviousShards } | undefined;
}

/** What an encoded shard came to; its bytes went to the sink. */
export interface EncodedShard {
  rows: number;
  /** Size of the file in bytes. */
  bytes: number;
  /** A Parquet file of the rows marked `upsert` (the shard's `_delta/` upserts), when any is. */
  upserts?: Uint8Array | undefined;
}

/** Where a file's bytes go as they are produced (an ObjectStore's writeStream, in practice). */
export type ShardSink = (chunks: AsyncIterable<Uint8Array>) => Promise<unknown>;

/**
 * The shard thread's V8 young generation, in MB (V8 gives it a third to each of its two
 * semi-spaces and large objects: 12 MB is 4 MB semi-spaces; V8's default is 16 MB semi-spaces).
 * The thread makes little JS garbage, but what it receives and makes is mostly ArrayBuffers
 * (slices of batches, Arrow buffers, file chunks), which are freed only when the small objects
 * that hold them are collected: a small young generation collects them sooner.
 */
export const SHARD_THREAD_YOUNG_GENERATION_MB = 12;

/**
 * Encodes shards on one background thread per process (see shard-thread.ts for why). The thread
 * starts on first use and is unref'd, so it never keeps a process alive.
 */
export class ShardEncoder {
  private worker: Worker | undefined;
  private nextId = 0;
  /** The thread's memory during its last shard (for the worker's memory log line and the bench). */
  lastThreadMemory: ShardThreadMemory | undefined;
  /** Slices of batches handed to the thread for the last shard, and how many went into a buffer it gave back. */
  lastShardSlices = { slices: 0, reused: 0 };
  /** Called with the thread's memory after each shard (the worker logs it: a shard's peak is brief). */
  onShardMemory: ((memory: ShardThreadMemory) => void) | undefined;
  private readonly running = new Map<number, (response: ShardThreadResponse) => void>();

  /**
   * Decodes the batches `slices` hands over (a few at a time, in batch order), orders the rows by
   * `row`, and streams the shard file's bytes into `sink`. Resolves once the sink has taken the
   * last byte and returned. Slices are read only when the thread asks for them, and the thread
   * produces the next chunk only once the sink has taken the one before, so memory stays at a
   * slice and a chunk (plus one row group on the thread) whatever the shard's size.
   *
   * On any failure (the thread's, the source's or the sink's) the others are stopped and the
   * first error is thrown; the sink sees its chunks end in that error and must then leave nothing
   * visible (ObjectStore.writeStream does not).
   */
  async encode(slices: AsyncIterable<readonly Uint8Array[]>, options: ShardEncodeOptions, sink: ShardSink): Promise<EncodedShard> {
    const worker = this.thread();
    const id = this.nextId++;
    const source = slices[Symbol.asyncIterator]();
    const output = new ChunkChannel(() => worker.postMessage({ type: 'taken', id } satisfies ShardThreadRequest));
    let failure: Error | undefined;
    /** The buffer of a slice the thread has finished with: the next slice is packed into it if it fits. */
    let spare: ArrayBuffer | undefined;
    const handed = (this.lastShardSlices = { slices: 0, reused: 0 });
    let result: { rows: number; upserts?: Uint8Array } | undefined;
    const fail = (error: Error): void => {
      if (failure) return;
      failure = error;
      this.release(id);
      worker.postMessage({ type: 'cancel', id } satisfies ShardThreadRequest);
      output.fail(error);
    };
    const feed = async (): Promise<void> => {
      try {
        const next = await source.next();
        if (failure) return;
        const batches = next.done ? null : packed(next.value, spare);
        if (batches) {
          handed.slices += 1;
          if (spare && batches[0]?.buffer === spare) handed.reused += 1;
        }
        spare = undefined;
        worker.postMessage({ type: 'batches', id, batches } satisfies ShardThreadRequest, batches?.[0] ? [batches[0].buffer as ArrayBuffer] : []);
      } catch (error) {
        fail(error instanceof Error ? error : new Error(String(error)));
      }
    };
    this.running.set(id, (response) => {
      if (response.type === 'need') {
        spare = response.spare;
        void feed();
      } else if (response.type === 'previous') {
        const previous = options.reuse?.previous;
        if (!previous) fail(new Error(`shard thread asked for previous shard ${response.shard} of a shard without --reuse`));
        else {
          previous.localCopy(response.shard).then(
            (path) => {
              if (!failure) worker.postMessage({ type: 'previous', id, path } satisfies ShardThreadRequest);
            },
            (error: unknown) => fail(error instanceof Error ? error : new Error(String(error))),
          );
        }
      } else if (response.type === 'chunk') output.put(response.bytes);
      else if (response.type === 'done') {
        this.release(id);
        this.lastThreadMemory = response.memory;
        this.onShardMemory?.(response.memory);
        result = { rows: response.rows, ...(response.upserts ? { upserts: response.upserts } : {}) };
        output.end();
      } else {
        // The thread's permanent errors fail the job as they would on this thread: a previous row
        // changed or unreadable (REUSE_UNAVAILABLE), a buffered batch that does not decode
        // (BATCH_CORRUPT: no attempt reads it better). Anything else is a failed encoding, retried.
        const { code, message } = response.error;
        const error =
          code === 'REUSE_UNAVAILABLE' ? new ReuseUnavailableError(message) : code === 'BATCH_CORRUPT' ? new BatchCodecError(message) : new Error(`shard encoding failed: ${message}`);
        error.stack = response.error.stack ?? error.stack;
        fail(error);
      }
    });
    worker.ref();
    const reuse = options.reuse && { list: ownCopy(options.reuse.list), location: options.reuse.previous.location, format: options.reuse.previous.format, files: [...options.reuse.previous.files] };
    worker.postMessage({ type: 'start', id, dimension: options.dimension, format: options.format, reuse } satisfies ShardThreadRequest, reuse ? [reuse.list.buffer as ArrayBuffer] : []);
    try {
      await sink(output.chunks());
    } catch (error) {
      fail(error instanceof Error ? error : new Error(String(error)));
    } finally {
      await source.return?.().catch(() => undefined);
    }
    if (failure) throw failure;
    if (!result) {
      const error = new Error('shard sink returned before taking the whole file');
      fail(error);
      throw error;
    }
    return { rows: result.rows, bytes: output.bytes, upserts: result.upserts };
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

  private release(id: number): void {
    this.running.delete(id);
    if (this.running.size === 0) this.worker?.unref();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = startThread(new URL('./shard-thread.js', import.meta.url), new URL('./shard-thread.ts', import.meta.url), {
      resourceLimits: { maxYoungGenerationSizeMb: SHARD_THREAD_YOUNG_GENERATION_MB },
    });
    worker.unref();
    worker.on('message', (response: ShardThreadResponse) => this.running.get(response.id)?.(response));
    const failAll = (error: Error): void => {
      for (const handle of [...this.running.values()]) handle({ type: 'error', id: -1, error: { message: error.message, stack: error.stack } });
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      failAll(new Error(`shard encoding thread exited with code ${code}`));
    });
    this.worker = worker;
    return worker;
  }
}

/** A copy of `bytes` in an ArrayBuffer of its own, to transfer (a Buffer may be a view on a shared pool). */
function ownCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/**
 * A slice's batches copied into one buffer of their own, which is transferred, not cloned: Redis
 * reply buffers may share memory with other replies, and a structured clone would hold a
 * serialized copy besides the thread's. The buffer is `spare` (one the thread gave back) when the
 * slice fits in it; a new one has a quarter more room, so the slices after it fit too (their sizes
 * vary with the texts).
 */
export function packed(batches: readonly Uint8Array[], spare?: ArrayBuffer): Uint8Array[] {
  const total = batches.reduce((sum, batch) => sum + batch.byteLength, 0);
  const buffer = spare && spare.byteLength >= total ? spare : new ArrayBuffer(total + (total >> 2));
  let offset = 0;
  return batches.map((batch) => {
    const copy = new Uint8Array(buffer, offset, batch.byteLength);
    copy.set(batch);
    offset += batch.byteLength;
    return copy;
  });
}
