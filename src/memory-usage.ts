/** Where a worker process's memory is, in MB, for the periodic `memory` debug line and the bench. */
export interface MemoryBreakdown {
  rssMb: number;
  /** The main thread's JS heap (used, and reserved from the OS). */
  heapUsedMb: number;
  heapTotalMb: number;
  /** Buffers and typed arrays outside the main heap (Redis replies, HTTP bodies, vectors). */
  arrayBuffersMb: number;
  /** The shard thread's JS heap and parquet-wasm memory after its last shard, if it wrote one. */
  shardThreadHeapMb?: number | undefined;
  shardThreadWasmMb?: number | undefined;
}

const mb = (bytes: number): number => Math.round((bytes / 1_048_576) * 10) / 10;

export function memoryBreakdown(shardThread?: { heapUsed: number; wasmBytes: number }): MemoryBreakdown {
  const usage = process.memoryUsage();
  return {
    rssMb: mb(usage.rss),
    heapUsedMb: mb(usage.heapUsed),
    heapTotalMb: mb(usage.heapTotal),
    arrayBuffersMb: mb(usage.arrayBuffers),
    shardThreadHeapMb: shardThread && mb(shardThread.heapUsed),
    shardThreadWasmMb: shardThread && mb(shardThread.wasmBytes),
  };
}
