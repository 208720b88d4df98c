import { wasmMemory } from 'parquet-wasm';

/**
 * Bytes of parquet-wasm's WebAssembly memory. It grows to the largest row group written and is
 * never given back (WebAssembly memory cannot shrink), which is why shards are handed to the
 * writer one row group at a time.
 */
export function wasmMemoryBytes(): number {
  return wasmMemory().buffer.byteLength;
}
