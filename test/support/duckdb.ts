import { DuckDBInstance } from '@duckdb/node-api';

/**
 * Runs one SQL query on a fresh in-memory DuckDB and returns its rows as plain JS objects:
 * the independent reader for shard files (`SELECT * FROM read_parquet('/path/part-00000.parquet')`).
 *
 * Value mapping (DuckDB's `getRowObjectsJS`):
 * - BIGINT (`row`, `line`) → `bigint`, so large row numbers stay exact; use `Number(value)`.
 * - INTEGER → number; FLOAT → number (the float32 value exactly, so `Math.fround(x) === x`);
 *   VARCHAR → string; NULL → null.
 * - `FLOAT[]` → `number[]`; `STRUCT(...)[]` → array of plain objects keyed by field name,
 *   e.g. `[{ index: 7, value: 0.25, token: 'cat' }]`.
 *
 * The instance is closed before returning, also when the query fails.
 */
export async function queryParquet(sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(':memory:');
  try {
    const connection = await instance.connect();
    try {
      const result = await connection.runAndReadAll(sql);
      return await result.getRowObjectsJS();
    } finally {
      connection.closeSync();
    }
  } finally {
    instance.closeSync();
  }
}

/** Quotes a file path as a SQL string literal for `read_parquet('…')`. */
export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
