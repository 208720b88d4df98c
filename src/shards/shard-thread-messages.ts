import type { OutputFormat } from './shard-row.js';

/**
 * The messages between a ShardEncoder (main thread) and the shard thread, per shard `id`:
 *
 * ```
 * main → thread   start      options of the shard
 * thread → main   need       send the next slice of batches (asked one slice ahead), with the
 *                            buffer of a slice it has finished with, for the main thread to reuse
 * main → thread   batches    a slice, in batch order; null when there are no more
 * thread → main   previous   (`--reuse`) make a local copy of a previous shard's file
 * main → thread   previous   its path (the copy before it may be gone)
 * thread → main   chunk      the next bytes of the file (transferred)
 * main → thread   taken      the chunk was consumed: the thread may produce the next
 * thread → main   done       rows, the thread's memory, the delta's upserts file if any
 * thread → main   error      the encoding failed
 * main → thread   cancel     the main thread gave up (storage or Redis failed): stop, answer nothing
 * ```
 *
 * The thread waits for `taken` before it goes on, and the main thread reads the next slice from
 * Redis only when asked: a slow upload or a slow Redis holds the other side back, so what is in
 * flight stays a slice of batches and a chunk of output whatever the shard's size.
 */
export type ShardThreadRequest =
  | {
      type: 'start';
      id: number;
      dimension: number;
      format: OutputFormat;
      /** `--reuse`: lines whose rows the thread copies from a previous output (src/reuse/reused-rows.ts). */
      reuse?: ShardReuse | undefined;
    }
  | { type: 'batches'; id: number; batches: Uint8Array[] | null }
  | { type: 'previous'; id: number; path: string }
  | { type: 'taken'; id: number }
  | { type: 'cancel'; id: number };

/** The reused lines of a shard and where their previous rows are. */
export interface ShardReuse {
  /** The shard's reuse list, encoded (src/reuse/reuse-list.ts); transferred. */
  list: Uint8Array;
  /** The previous output, its format and its shards' files, as in PreviousShards. */
  location: string;
  format: OutputFormat;
  files: string[];
}

/**
 * The thread's own memory in bytes, each part at its peak during a shard (sampled after each row
 * group): its JS heap (used, and reserved from the OS), its ArrayBuffers outside the heap (vectors,
 * Arrow buffers, file chunks), and parquet-wasm's WebAssembly memory (never shrinks).
 */
export interface ShardThreadMemory {
  heapUsed: number;
  heapTotal: number;
  arrayBuffers: number;
  wasmBytes: number;
  /** The thread's OS thread id (Linux), so its CPU time can be told from the main thread's. */
  osThreadId?: number | undefined;
}

/** `upserts`: a Parquet file of the rows marked `upsert` (`_delta/`), when there are any. */
export type ShardThreadResponse =
  | {
      type: 'need';
      id: number;
      /**
       * A slice's buffer the thread has done with (transferred back): the next slice is packed
       * into it when it fits. A shard's slices then cycle through a few buffers instead of leaving
       * one dead buffer per slice (~4 MB each at dimension 1024 with sparse) until a GC.
       */
      spare?: ArrayBuffer | undefined;
    }
  | { type: 'previous'; id: number; shard: number }
  | { type: 'chunk'; id: number; bytes: Uint8Array }
  | { type: 'done'; id: number; rows: number; memory: ShardThreadMemory; upserts?: Uint8Array }
  /** `code`: an EmbedqError's, so the main thread can throw the same kind (a ReuseUnavailableError fails the job). */
  | { type: 'error'; id: number; error: { message: string; stack?: string | undefined; code?: string | undefined } };
