import { type Data, DataType, type FixedSizeList, type Float32, Precision, type Table, tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';

import type { OutputFormat } from './shard-row.js';

/**
 * Reads a shard written by `encodeShard` back into an Arrow table.
 *
 * Parquet goes through parquet-wasm (which restores `fixed_size_list` from the Arrow schema
 * stored in the file) and an IPC stream; Arrow IPC files are read directly.
 *
 * @param bytes the whole file
 * @param format the format it was written in
 */
export function readShard(bytes: Uint8Array, format: OutputFormat): Table {
  if (format === 'arrow') {
    return tableFromIPC(bytes);
  }
  // readParquet returns a wasm-owned table; intoIPCStream consumes (and frees) it.
  return tableFromIPC(readParquet(bytes).intoIPCStream());
}

/** The dense vectors of a shard as one row-major matrix. */
export interface DenseMatrix {
  /** The `row` column, in table order: `rows[i]` is the row of vector `i`. */
  rows: number[];
  /**
   * `tableIndices[i]` is the table position of vector `i` (for `table.get(...)` or another
   * column's `.get(...)`); it differs from `i` once a row without a dense vector was skipped.
   */
  tableIndices: number[];
  /** Values per vector. */
  dimension: number;
  /**
   * `rows.length × dimension` floats, vector `i` at `[i * dimension, (i + 1) * dimension)`.
   * A row whose `dense` is null is left out of `rows` and `values` altogether.
   */
  values: Float32Array;
}

/**
 * Gathers the `dense` column of a shard table into one `Float32Array`, e.g. to answer a
 * nearest-neighbour query. Rows whose dense vector is null are skipped.
 *
 * @throws Error when the table has no `row` or `dense` column, or `dense` is not a
 *   `fixed_size_list<float32>`
 */
export function denseMatrix(table: Table): DenseMatrix {
  const rowColumn = table.getChild('row');
  const denseColumn = table.getChild('dense');
  if (rowColumn === null || denseColumn === null) {
    throw new Error('shard table has no "row" or "dense" column');
  }
  const type = denseColumn.type as DataType;
  const item = DataType.isFixedSizeList(type) ? (type.children[0]!.type as DataType) : null;
  if (!DataType.isFixedSizeList(type) || !DataType.isFloat(item) || item.precision !== Precision.SINGLE) {
    throw new Error(`shard column "dense" is ${String(type)}, expected FixedSizeList<Float32>`);
  }
  const dimension = type.listSize;

  const rows: number[] = [];
  const tableIndices: number[] = [];
  const values = new Float32Array((denseColumn.length - denseColumn.nullCount) * dimension);
  let next = 0;
  let tableIndex = 0;
  // Walk batch by batch over the raw child buffers: no per-row Vector objects.
  for (const chunk of denseColumn.data as Data<FixedSizeList<Float32>>[]) {
    // Slicing a fixed_size_list in arrow JS also slices its child (and the child's values
    // buffer), so element i of this chunk always starts at i × dimension here.
    const childValues = chunk.children[0]!.values as Float32Array;
    for (let i = 0; i < chunk.length; i++, tableIndex++) {
      if (!chunk.getValid(i)) {
        continue;
      }
      const start = i * dimension;
      values.set(childValues.subarray(start, start + dimension), next * dimension);
      rows.push(Number(rowColumn.get(tableIndex) as bigint | number));
      tableIndices.push(tableIndex);
      next++;
    }
  }
  return { rows, tableIndices, dimension, values };
}
