/** Where a worker process's memory is, in MB, for the periodic `memory` line and the bench. */
export interface MemoryBreakdown {
  rssMb: number;
  /** The main thread's JS heap (used, and reserved from the OS). */
  heapUsedMb: number;
  heapTotalMb: number;
  /** The main thread's Buffers and typed arrays outside its heap (Redis replies, HTTP bodies, vectors). */
  arrayBuffersMb: number;
  /**
   * The shard thread, each part at its peak during its last shard, if it wrote one: its JS heap
   * (used, reserved), its ArrayBuffers (Arrow columns, file chunks), parquet-wasm's memory.
   */
  shardThreadHeapMb?: number | undefined;
  shardThreadHeapTotalMb?: number | undefined;
  shardThreadArrayBuffersMb?: number | undefined;
  shardThreadWasmMb?: number | undefined;
  /** The shard thread's OS thread id (Linux): its CPU time is in /proc/<pid>/task/<id>/stat. */
  shardThreadOsId?: number | undefined;
}

/** The shard thread's memory in bytes, as its encoder reports it (src/shards/shard-thread-messages.ts). */
export interface ThreadMemory {
  heapUsed: number;
  heapTotal: number;
  arrayBuffers: number;
  wasmBytes: number;
  osThreadId?: number | undefined;
}

const mb = (bytes: number): number => Math.round((bytes / 1_048_576) * 10) / 10;

export function memoryBreakdown(shardThread?: ThreadMemory): MemoryBreakdown {
  const usage = process.memoryUsage();
  return {
    rssMb: mb(usage.rss),
    heapUsedMb: mb(usage.heapUsed),
    heapTotalMb: mb(usage.heapTotal),
    arrayBuffersMb: mb(usage.arrayBuffers),
    shardThreadHeapMb: shardThread && mb(shardThread.heapUsed),
    shardThreadHeapTotalMb: shardThread && mb(shardThread.heapTotal),
    shardThreadArrayBuffersMb: shardThread && mb(shardThread.arrayBuffers),
    shardThreadWasmMb: shardThread && mb(shardThread.wasmBytes),
    shardThreadOsId: shardThread?.osThreadId,
  };
}
