import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { DataType, type Field, tableFromIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';

import { BatchCodecError, decodeBatch, encodeBatch } from '../../src/shards/batch-codec.js';
import { encodeShard, PARQUET_HANDOVER_ROWS, PARQUET_ROW_GROUP_ROWS, parquetChunks, parquetRowGroupRows } from '../../src/shards/encode-shard.js';
import { denseMatrix, readShard } from '../../src/shards/read-shard.js';
import type { OutputFormat, ShardRow } from '../../src/shards/shard-row.js';
import { batchRowGroups } from '../../src/shards/row-group-builder.js';
import { queryParquet, sqlString } from '../support/duckdb.js';
import { float32Bytes, makeShardRows } from '../support/shard-rows.js';

const folder = mkdtempSync(path.join(tmpdir(), 'embedq-encode-shard-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

async function writeShard(name: string, rows: readonly ShardRow[], dimension: number, format: OutputFormat): Promise<{ file: string; bytes: Uint8Array }> {
  const bytes = await encodeShard(rows, { dimension, format });
  const file = path.join(folder, name);
  writeFileSync(file, bytes);
  return { file, bytes };
}

/** Every value of every row as DuckDB reads it, compared with the input; floats bit for bit. */
async function expectParquetHolds(file: string, rows: readonly ShardRow[]): Promise<void> {
  const read = await queryParquet(`SELECT * FROM read_parquet(${sqlString(file)})`);
  expect(read.length).toBe(rows.length);
  for (const [i, got] of read.entries()) {
    const want = rows[i]!;
    expect(scalarColumns(got)).toEqual(expectedScalars(want));
    if (want.dense === null) {
      expect(got.dense).toBeNull();
    } else {
      expect(float32Bytes(got.dense as number[]).equals(float32Bytes(want.dense))).toBe(true);
    }
    // toEqual compares numbers with Object.is, so -0 and 0 differ; sparse values are float32.
    expect(got.sparse).toEqual(want.sparse);
  }
}

function typeOf(fields: readonly Field[], name: string): DataType {
  const field = fields.find((candidate) => candidate.name === name);
  expect(field, `column ${name}`).toBeDefined();
  return field!.type as DataType;
}

/** The exact Arrow types of DESIGN's output columns table. */
function expectShardSchema(fields: readonly Field[], dimension: number): void {
  expect(fields.map((field) => field.name)).toEqual(['row', 'source', 'line', 'id', 'text', 'dense', 'sparse', 'content_hash']);
  for (const name of ['row', 'line']) {
    const type = typeOf(fields, name);
    expect(DataType.isInt(type) && type.bitWidth === 64 && type.isSigned).toBe(true);
  }
  for (const name of ['source', 'id', 'text', 'content_hash']) {
    expect(DataType.isUtf8(typeOf(fields, name))).toBe(true);
  }
  expect(fields.find((field) => field.name === 'id')!.nullable).toBe(true);

  const dense = typeOf(fields, 'dense');
  expect(DataType.isFixedSizeList(dense)).toBe(true);
  if (DataType.isFixedSizeList(dense)) {
    expect(dense.listSize).toBe(dimension);
    const item = dense.children[0]!.type as DataType;
    expect(DataType.isFloat(item) && item.precision === 1).toBe(true); // Precision.SINGLE
  }

  const sparse = typeOf(fields, 'sparse');
  expect(DataType.isList(sparse)).toBe(true);
  const entry = sparse.children![0]!.type as DataType;
  expect(DataType.isStruct(entry)).toBe(true);
  expect(entry.children!.map((field) => `${field.name}:${String(field.type)}`)).toEqual(['index:Int32', 'value:Float32', 'token:Utf8']);
}

describe('encodeShard → Parquet, read back with DuckDB', () => {
  const dimension = 64;
  const rows = makeShardRows(PARQUET_ROW_GROUP_ROWS + 500, { dimension, firstRow: 2 ** 40, sparseEntries: 20 }); // spans two row groups

  it('has the documented column types', async () => {
    const { file } = await writeShard('types.parquet', rows.slice(0, 10), dimension, 'parquet');
    const columns = await queryParquet(`DESCRIBE SELECT * FROM read_parquet(${sqlString(file)})`);
    expect(Object.fromEntries(columns.map((column) => [column.column_name, column.column_type]))).toEqual({
      row: 'BIGINT',
      source: 'VARCHAR',
      line: 'BIGINT',
      id: 'VARCHAR',
      text: 'VARCHAR',
      dense: 'FLOAT[]',
      sparse: 'STRUCT("index" INTEGER, "value" FLOAT, token VARCHAR)[]',
      content_hash: 'VARCHAR',
    });
  });

  it('keeps every value bit-exact, nulls where expected, in row order', async () => {
    const { file } = await writeShard('values.parquet', rows, dimension, 'parquet');
    await expectParquetHolds(file, rows);
    // Row groups as configured, ZSTD on the top-level columns only, statistics where a reader uses
    // them, and a created_by without a build timestamp.
    const groups = await queryParquet(
      `SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id`,
    );
    expect(groups.map((group) => Number(group.row_group_num_rows))).toEqual([PARQUET_ROW_GROUP_ROWS, 500]);
    const columns = await queryParquet(
      `SELECT DISTINCT path_in_schema, compression, (stats_min IS NOT NULL OR stats_min_value IS NOT NULL) AS has_stats FROM parquet_metadata(${sqlString(file)}) ORDER BY path_in_schema`,
    );
    const byColumn = Object.fromEntries(columns.map((column) => [String(column.path_in_schema), `${column.compression}${column.has_stats ? ' +stats' : ''}`]));
    expect(byColumn).toMatchObject({ row: 'ZSTD +stats', line: 'ZSTD +stats', source: 'ZSTD +stats', text: 'ZSTD +stats' });
    expect(byColumn.content_hash).toMatch(/^ZSTD/); // null in these rows: no min or max to keep
    const vectorLeaves = Object.entries(byColumn).filter(([column]) => /^(dense|sparse),/.test(column));
    expect(vectorLeaves.length).toBe(4); // dense's floats; sparse's index, value and token
    for (const [column, settings] of vectorLeaves) expect(settings, column).toBe('UNCOMPRESSED');
    const [metadata] = await queryParquet(`SELECT created_by FROM parquet_file_metadata(${sqlString(file)})`);
    expect(metadata!.created_by).toMatch(/^parquet-rs version [\d.]+$/);
  });

  it('keeps a row group to ~4 MB of dense floats above dimension 1024', async () => {
    expect([64, 1024, 1536, 2048].map(parquetRowGroupRows)).toEqual([PARQUET_ROW_GROUP_ROWS, PARQUET_ROW_GROUP_ROWS, 666, 500]);
    const wide = makeShardRows(1_200, { dimension: 2048, sparseEntries: 5 });
    const { file } = await writeShard('wide.parquet', wide, 2048, 'parquet');
    const groups = await queryParquet(`SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id`);
    expect(groups.map((group) => Number(group.row_group_num_rows))).toEqual([500, 500, 200]);
    await expectParquetHolds(file, wide);
  });

  it('writes identical bytes for identical rows', async () => {
    const first = await encodeShard(rows, { dimension, format: 'parquet' });
    const second = await encodeShard(makeShardRows(rows.length, { dimension, firstRow: 2 ** 40, sparseEntries: 20 }), { dimension, format: 'parquet' });
    expect(Buffer.from(first).equals(Buffer.from(second))).toBe(true);
  });

  it('writes a dense-only shard (sparse all null)', async () => {
    const denseOnly = makeShardRows(50, { dimension, sparse: false });
    const { file } = await writeShard('dense-only.parquet', denseOnly, dimension, 'parquet');
    await expectParquetHolds(file, denseOnly);
  });

  it('writes a sparse-only shard (dense all null)', async () => {
    const sparseOnly = makeShardRows(50, { dimension, dense: false });
    const { file } = await writeShard('sparse-only.parquet', sparseOnly, dimension, 'parquet');
    await expectParquetHolds(file, sparseOnly);
  });

  it('writes zero rows as a valid file with the full schema', async () => {
    const { file, bytes } = await writeShard('empty.parquet', [], dimension, 'parquet');
    expect(await queryParquet(`SELECT * FROM read_parquet(${sqlString(file)})`)).toEqual([]);
    const columns = await queryParquet(`DESCRIBE SELECT * FROM read_parquet(${sqlString(file)})`);
    expect(columns.map((column) => column.column_type)).toEqual(['BIGINT', 'VARCHAR', 'BIGINT', 'VARCHAR', 'VARCHAR', 'FLOAT[]', 'STRUCT("index" INTEGER, "value" FLOAT, token VARCHAR)[]', 'VARCHAR']);
    expectShardSchema(readShard(bytes, 'parquet').schema.fields, dimension);
  });

  it('carries the Arrow schema, so an Arrow reader gets fixed_size_list back', async () => {
    const some = rows.slice(0, 20);
    const table = readShard(await encodeShard(some, { dimension, format: 'parquet' }), 'parquet');
    expectShardSchema(table.schema.fields, dimension);
    const matrix = denseMatrix(table);
    expect(matrix.rows).toEqual(some.map((row) => row.row));
    expect(matrix.dimension).toBe(dimension);
    expect(float32Bytes(matrix.values).equals(Buffer.concat(some.map((row) => float32Bytes(row.dense!))))).toBe(true);
  });

  it('denseMatrix skips rows without a vector, across record batches and slices', async () => {
    const mixed = makeShardRows(2_500, { dimension }).map((row, i) => (i % 9 === 4 ? { ...row, dense: null } : row));
    const table = readShard(await encodeShard(mixed, { dimension, format: 'parquet' }), 'parquet');
    expect(table.batches.length).toBeGreaterThan(1); // readParquet yields batches of 1,024 rows
    for (const [view, offset] of [[table, 0], [table.slice(1_000, 2_100), 1_000]] as const) {
      const expected = mixed.slice(offset, offset + view.numRows).flatMap((row, i) => (row.dense === null ? [] : [{ row, i }]));
      const matrix = denseMatrix(view);
      expect(matrix.rows).toEqual(expected.map(({ row }) => row.row));
      expect(matrix.tableIndices).toEqual(expected.map(({ i }) => i));
      expect(float32Bytes(matrix.values).equals(Buffer.concat(expected.map(({ row }) => float32Bytes(row.dense!))))).toBe(true);
    }
  });

  it('rejects a dense vector of the wrong length', async () => {
    await expect(encodeShard(rows.slice(0, 3), { dimension: dimension + 1, format: 'parquet' })).rejects.toThrow(/expected 65/);
  });
});

describe('encodeShard → Arrow IPC file, read back with apache-arrow', () => {
  const dimension = 32;

  it('has the exact Arrow types and every value', async () => {
    const rows = makeShardRows(300, { dimension, firstRow: 2 ** 40 });
    const { bytes } = await writeShard('values.arrow', rows, dimension, 'arrow');
    // The IPC file format starts and ends with the "ARROW1" magic (the stream format does not).
    expect(Buffer.from(bytes.subarray(0, 6)).toString()).toBe('ARROW1');
    expect(Buffer.from(bytes.subarray(-6)).toString()).toBe('ARROW1');

    const table = tableFromIPC(bytes);
    expectShardSchema(table.schema.fields, dimension);
    expect(table.numRows).toBe(rows.length);
    for (const [i, want] of rows.entries()) {
      const got = table.get(i)!.toJSON();
      expect(scalarColumns(got)).toEqual(expectedScalars(want));
      expect(float32Bytes(got.dense!.toArray()).equals(float32Bytes(want.dense!))).toBe(true);
      expect(got.sparse!.toArray().map((entry: { toJSON(): unknown }) => entry.toJSON())).toEqual(want.sparse);
    }
  });

  it('writes dense-only, sparse-only and empty shards; identical bytes for identical rows', async () => {
    for (const [name, rows] of [
      ['dense-only', makeShardRows(20, { dimension, sparse: false })],
      ['sparse-only', makeShardRows(20, { dimension, dense: false })],
      ['empty', []],
    ] as const) {
      const bytes = await encodeShard(rows, { dimension, format: 'arrow' });
      expect(Buffer.from(bytes).equals(Buffer.from(await encodeShard(rows, { dimension, format: 'arrow' }))), name).toBe(true);
      const table = readShard(bytes, 'arrow');
      expectShardSchema(table.schema.fields, dimension);
      expect(table.numRows).toBe(rows.length);
      const dense = table.getChild('dense')!;
      const sparse = table.getChild('sparse')!;
      expect(dense.nullCount, name).toBe(name === 'sparse-only' ? rows.length : 0);
      expect(sparse.nullCount, name).toBe(name === 'dense-only' ? rows.length : 0);
      expect(denseMatrix(table).rows).toEqual(name === 'dense-only' ? rows.map((row) => row.row) : []);
    }
  });
});

/** The scalar columns of a row as read back (either reader), and what they must hold: int64 as bigint. */
function scalarColumns(got: Record<string, unknown>): Record<string, unknown> {
  return { row: got.row, source: got.source, line: got.line, id: got.id, text: got.text };
}

function expectedScalars(want: ShardRow): Record<string, unknown> {
  return { row: BigInt(want.row), source: want.source, line: BigInt(want.line), id: want.id, text: want.text };
}

/** `batches` handed over `size` at a time, as the shard writer reads them from Redis. */
async function* slicesOf(batches: readonly Uint8Array[], size: number): AsyncGenerator<Uint8Array[]> {
  for (let index = 0; index < batches.length; index += size) yield batches.slice(index, index + size);
}

/** Batches of up to 10 rows (fewer now and then, as when lines failed), in row order. */
function batchesOf(rows: readonly ShardRow[], dimension: number): Uint8Array[] {
  const batches: Uint8Array[] = [];
  for (let index = 0, size = 10; index < rows.length; index += size, size = size === 10 ? 7 : 10) batches.push(encodeBatch(rows.slice(index, index + size), dimension));
  return batches;
}

/** Streams `batches` the way the shard thread does: row groups built from batch bytes, then Parquet. */
async function streamed(batches: readonly Uint8Array[], size: number, dimension: number, marked: ShardRow[] = []): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of parquetChunks(batchRowGroups(slicesOf(batches, size), PARQUET_ROW_GROUP_ROWS, dimension, marked), dimension)) chunks.push(chunk);
  return chunks;
}

describe('streaming a shard row group by row group, straight from batch bytes', () => {
  it('writes the same bytes as the whole-shard encoder of the decoded rows, whatever the slice size', async () => {
    const dimension = 64;
    const rows = makeShardRows(PARQUET_ROW_GROUP_ROWS * 2 + 123, { dimension, firstRow: 5_000, sparseEntries: 12 });
    const batches = batchesOf(rows, dimension);
    const whole = await encodeShard(rows, { dimension, format: 'parquet' });
    for (const size of [1, 7, 64, batches.length]) {
      const chunks = await streamed(batches, size, dimension);
      // More than one chunk: the file leaves the encoder as it is written, not at the end.
      expect(chunks.length).toBeGreaterThan(1);
      expect(Buffer.concat(chunks).equals(Buffer.from(whole))).toBe(true);
    }
  });

  it('writes the same bytes and row groups however many rows each hand-over into the writer carries', async () => {
    const dimension = 32;
    const rows = makeShardRows(PARQUET_ROW_GROUP_ROWS * 2 + 77, { dimension, sparseEntries: 10 });
    const batches = batchesOf(rows, dimension);
    const handedOver = async (handoverRows: number): Promise<Buffer> => {
      const chunks: Uint8Array[] = [];
      const groups = batchRowGroups(slicesOf(batches, 16), PARQUET_ROW_GROUP_ROWS, dimension, []);
      for await (const chunk of parquetChunks(groups, dimension, handoverRows)) chunks.push(chunk);
      return Buffer.concat(chunks);
    };
    const whole = await handedOver(PARQUET_ROW_GROUP_ROWS);
    expect(PARQUET_HANDOVER_ROWS).toBeLessThan(PARQUET_ROW_GROUP_ROWS);
    for (const handoverRows of [PARQUET_HANDOVER_ROWS, 333, 1]) expect((await handedOver(handoverRows)).equals(whole), `${handoverRows} rows`).toBe(true);
    const file = path.join(folder, 'handover.parquet');
    writeFileSync(file, whole);
    const groups = await queryParquet(`SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id`);
    expect(groups.map((group) => Number(group.row_group_num_rows))).toEqual([PARQUET_ROW_GROUP_ROWS, PARQUET_ROW_GROUP_ROWS, 77]);
  });

  it('copies every kind of value byte for byte: nulls in each nullable column, content hashes, 4-byte and lone-surrogate tokens; picks the upsert rows', async () => {
    const dimension = 16;
    const hash = (i: number): string => createHash('sha256').update(String(i)).digest('hex');
    const rows = makeShardRows(PARQUET_ROW_GROUP_ROWS + 45, { dimension, sparseEntries: 9 }).map(
      (row, i): ShardRow => ({
        ...row,
        dense: i % 4 === 1 ? null : row.dense,
        sparse: i % 6 === 2 ? null : i % 11 === 0 ? [{ index: 3, value: 0.5, token: '\ud83d' }, { index: 9, value: -0, token: 'é🙂x' }] : row.sparse,
        ...(i % 3 === 0 ? { contentHash: hash(i) } : {}),
        ...(i % 13 === 5 ? { upsert: true } : {}),
      }),
    );
    const batches = batchesOf(rows, dimension);
    const marked: ShardRow[] = [];
    const chunks = await streamed(batches, 5, dimension, marked);
    // The whole-shard encoder sees the rows as the batches hand them back (a lone surrogate is U+FFFD by then).
    const decoded = batches.flatMap((batch) => decodeBatch(Buffer.from(batch)));
    expect(Buffer.concat(chunks).equals(Buffer.from(await encodeShard(decoded, { dimension, format: 'parquet' })))).toBe(true);
    expect(marked.map((row) => row.row)).toEqual(rows.filter((row) => row.upsert).map((row) => row.row));
    const file = path.join(folder, 'every-kind.parquet');
    writeFileSync(file, Buffer.concat(chunks));
    await expectParquetHolds(file, decoded);
  });

  it('refuses batches whose rows overlap or come out of order, rather than write a misordered shard', async () => {
    const dimension = 8;
    const rows = makeShardRows(20, { dimension });
    const overlapping = [encodeBatch(rows.slice(0, 12), dimension), encodeBatch(rows.slice(10, 20), dimension)];
    const reversed = [encodeBatch(rows.slice(10, 20), dimension), encodeBatch(rows.slice(0, 10), dimension)];
    for (const batches of [overlapping, reversed]) {
      await expect(streamed(batches, 1, dimension)).rejects.toThrow(/overlap or are out of order at row/);
    }
  });

  it('refuses a truncated or corrupted batch with BatchCodecError, and a batch of another dimension', async () => {
    const dimension = 8;
    const batch = encodeBatch(makeShardRows(10, { dimension }), dimension);
    await expect(streamed([batch.subarray(0, batch.length - 3)], 1, dimension)).rejects.toThrow(BatchCodecError);
    await expect(streamed([Buffer.concat([batch, Buffer.from([0])])], 1, dimension)).rejects.toThrow(/trailing bytes/);
    await expect(streamed([batch], 1, 16)).rejects.toThrow(/dense vector has 8 values, expected 16/);
  });

  it('writes an empty shard from no batches', async () => {
    const chunks = await streamed([], 4, 16);
    expect(Buffer.concat(chunks).equals(Buffer.from(await encodeShard([], { dimension: 16, format: 'parquet' })))).toBe(true);
  });
});
