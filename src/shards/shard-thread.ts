import { parentPort } from 'node:worker_threads';

import type { Table } from 'apache-arrow';

import { EmbedqError } from '../errors.js';
import type { PreviousShards } from '../reuse/previous-shards.js';
import { reusedRows, shardRowOf } from '../reuse/reused-rows.js';
import { decodeReuseList } from '../reuse/reuse-list.js';
import { decodeBatch } from './batch-codec.js';
import { mergeReusedRows } from './merge-rows.js';
import { lowerThisThreadPriority, osThreadId } from '../threads/background-priority.js';
import { encodeShard, parquetChunks, parquetRowGroupRows, rowTables } from './encode-shard.js';
import { batchRowGroups } from './row-group-builder.js';
import type { ShardReuse, ShardThreadMemory, ShardThreadRequest, ShardThreadResponse } from './shard-thread-messages.js';
import { wasmMemoryBytes } from './wasm-memory.js';
import type { ShardRow } from './shard-row.js';

/**
 * The shard thread: decoding, sorting and encoding a 10,000-row shard takes ~0.5-1.5 s of CPU;
 * here it runs off the worker's event loop (and at a lower CPU priority), so requests leave on
 * their rate-gate slots and BullMQ locks keep renewing. Input and output both stream (protocol in shard-thread-messages.ts): the
 * thread asks for batches a slice at a time and hands the file back a chunk at a time, waiting for
 * each chunk to be taken, so neither thread holds a whole shard.
 */

class Cancelled extends Error {}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/** One shard being encoded: the batches it waits for and the chunk it waits to see taken. */
class Session {
  private input: Waiter<Uint8Array[] | null> | undefined;
  private taken: Waiter<void> | undefined;
  private previous: Waiter<string> | undefined;
  private cancelled = false;
  /** Peaks during this shard, for the memory line (the end of a shard is not its peak). */
  peak: ShardThreadMemory = { heapUsed: 0, heapTotal: 0, arrayBuffers: 0, wasmBytes: 0 };

  constructor(readonly id: number) {}

  /**
   * The shard's batches, a slice at a time; the next slice is asked for while this one is decoded.
   * A slice must not be used once the next one is asked for: its buffer goes back to the main
   * thread for reuse (every consumer copies what it keeps: row-group-builder.ts, decodeBatch).
   */
  async *slices(): AsyncGenerator<Uint8Array[]> {
    let next = this.ask(undefined);
    let spare: ArrayBuffer | undefined;
    for (;;) {
      const batches = await next;
      if (batches === null) return;
      next = this.ask(spare);
      // A pending ask is settled by the main thread's reply (or cancel); never left unobserved.
      next.catch(() => undefined);
      yield batches;
      spare = batches[0]?.buffer as ArrayBuffer | undefined;
    }
  }

  /** Hands one chunk of the file over and waits until the main thread has taken it. */
  async send(bytes: Uint8Array): Promise<void> {
    this.sampleMemory();
    const taken = this.wait<void>((waiter) => (this.taken = waiter));
    // Transfer, not clone: a chunk is a whole row group's pages (megabytes).
    const own = ownBuffer(bytes);
    post({ type: 'chunk', id: this.id, bytes: own }, [own.buffer as ArrayBuffer]);
    await taken;
  }

  /** `--reuse`: asks the main thread for a local copy of previous shard `shard` and waits for its path. */
  async previousShard(shard: number): Promise<string> {
    const copied = this.wait<string>((waiter) => (this.previous = waiter));
    post({ type: 'previous', id: this.id, shard });
    return copied;
  }

  /** Samples the thread's memory (after each row group; a few times a shard). */
  sampleMemory(): void {
    const usage = process.memoryUsage();
    this.peak = {
      heapUsed: Math.max(this.peak.heapUsed, usage.heapUsed),
      heapTotal: Math.max(this.peak.heapTotal, usage.heapTotal),
      arrayBuffers: Math.max(this.peak.arrayBuffers, usage.arrayBuffers),
      wasmBytes: wasmMemoryBytes(),
      osThreadId: THREAD_ID,
    };
  }

  receive(request: ShardThreadRequest): void {
    if (request.type === 'batches') {
      const waiter = this.input;
      this.input = undefined;
      waiter?.resolve(request.batches);
    } else if (request.type === 'taken') {
      const waiter = this.taken;
      this.taken = undefined;
      waiter?.resolve();
    } else if (request.type === 'previous') {
      const waiter = this.previous;
      this.previous = undefined;
      waiter?.resolve(request.path);
    } else if (request.type === 'cancel') {
      this.cancelled = true;
      const error = new Cancelled('shard encoding cancelled');
      for (const waiter of [this.input, this.taken, this.previous]) waiter?.reject(error);
      this.input = undefined;
      this.taken = undefined;
      this.previous = undefined;
    }
  }

  private ask(spare: ArrayBuffer | undefined): Promise<Uint8Array[] | null> {
    const batches = this.wait<Uint8Array[] | null>((waiter) => (this.input = waiter));
    if (spare && spare.byteLength > 0) post({ type: 'need', id: this.id, spare }, [spare]);
    else post({ type: 'need', id: this.id });
    return batches;
  }

  private wait<T>(store: (waiter: Waiter<T>) => void): Promise<T> {
    if (this.cancelled) return Promise.reject(new Cancelled('shard encoding cancelled'));
    return new Promise<T>((resolve, reject) => store({ resolve, reject }));
  }
}

/** A shard's previous shards, copied locally by the main thread when asked (the thread has no store). */
function previousShards(session: Session, reuse: ShardReuse): PreviousShards {
  return { location: reuse.location, format: reuse.format, files: reuse.files, localCopy: (shard) => session.previousShard(shard) };
}

/**
 * `bytes` alone in its ArrayBuffer, so the buffer can be transferred: a small Buffer may be a view
 * on Node's shared pool, and transferring that would detach every other view on it.
 */
function ownBuffer(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
}

function post(response: ShardThreadResponse, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(response, transfer);
}

const sessions = new Map<number, Session>();

// At a lower CPU priority than the worker's main thread (Linux): encoding is batch work, and on a
// busy machine it starved the main thread, whose requests must leave on their rate-gate slots.
if (parentPort) lowerThisThreadPriority();
const THREAD_ID = osThreadId();

parentPort?.on('message', (request: ShardThreadRequest) => {
  if (request.type !== 'start') {
    sessions.get(request.id)?.receive(request);
    return;
  }
  const session = new Session(request.id);
  sessions.set(request.id, session);
  void encode(session, request)
    .catch((error: unknown) => {
      if (error instanceof Cancelled) return; // the main thread gave up on this shard; nobody listens
      const { message, stack } = error instanceof Error ? error : new Error(String(error));
      post({ type: 'error', id: request.id, error: { message, stack, code: error instanceof EmbedqError ? error.code : undefined } });
    })
    .finally(() => sessions.delete(request.id));
});

async function encode(session: Session, request: Extract<ShardThreadRequest, { type: 'start' }>): Promise<void> {
  let count = 0;
  // Rows of the delta (`upsert`: id new or changed); few in an incremental run, none otherwise.
  const marked: ShardRow[] = [];
  const counting = async function* (groups: AsyncIterable<Table>): AsyncGenerator<Table> {
    for await (const group of groups) {
      count += group.numRows;
      yield group;
    }
  };
  // `--reuse`: rows copied from a previous output join the embedded batches, merged by row as they
  // are read when they come in row order; else (lines moved between the runs) the shard is sorted whole.
  const reused = request.reuse ? reusedRows(decodeReuseList(Buffer.from(request.reuse.list.buffer, request.reuse.list.byteOffset, request.reuse.list.byteLength)), previousShards(session, request.reuse)) : undefined;
  if (request.format === 'parquet' && (reused === undefined || reused.inRowOrder)) {
    // Row group by row group, built straight from the batch bytes: one group's columns at a time.
    const slices = reused ? mergeReusedRows(session.slices(), reused.groups, request.dimension) : session.slices();
    const groups = counting(batchRowGroups(slices, parquetRowGroupRows(request.dimension), request.dimension, marked));
    for await (const chunk of parquetChunks(groups, request.dimension)) await session.send(chunk);
  } else {
    // Arrow IPC is written whole (its footer indexes every batch), and rows out of order must be
    // sorted whole. Both hold the shard's rows at once.
    const rows: ShardRow[] = [];
    for await (const slice of session.slices()) {
      for (const batch of slice) rows.push(...decodeBatch(Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength)));
    }
    if (reused) for await (const group of reused.groups) rows.push(...group.map(shardRowOf));
    rows.sort((a, b) => a.row - b.row);
    count = rows.length;
    for (const row of rows) if (row.upsert === true) marked.push(row);
    session.sampleMemory();
    if (request.format === 'parquet') {
      for await (const chunk of parquetChunks(rowTables(rows, request.dimension), request.dimension)) await session.send(chunk);
    } else {
      await session.send(await encodeShard(rows, { dimension: request.dimension, format: 'arrow' }));
    }
  }
  // The delta is always Parquet (src/reuse/delta-writer.ts), whatever the shards' format.
  const upserts = marked.length > 0 ? ownBuffer(await encodeShard(marked, { dimension: request.dimension, format: 'parquet' })) : undefined;
  session.sampleMemory();
  post({ type: 'done', id: request.id, rows: count, memory: session.peak, ...(upserts ? { upserts } : {}) }, upserts ? [upserts.buffer as ArrayBuffer] : []);
}
