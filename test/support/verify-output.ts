import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { expect } from 'vitest';

import type { EmbeddingParameters } from '../../src/embedding.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import type { Manifest } from '../../src/output/manifest.js';
import { textTokenLimit } from '../../src/models.js';
import { loadTokenizer } from '../../src/tokens/count-tokens.js';
import type { ExpectedLine } from './corpus-fixture.js';
import { queryParquet } from './duckdb.js';

/**
 * Checks a finished job's output folder against the fixture, reading the Parquet shards with
 * DuckDB (an independent reader): every text line exactly once, in its shard's row range, sorted,
 * with the emulator's exact vectors; every failed line in `_errors.jsonl`; counts that add up.
 */
export async function verifyOutput(folder: string, expected: readonly ExpectedLine[], parameters: EmbeddingParameters, shardRows: number): Promise<Manifest> {
  expect(existsSync(path.join(folder, '_SUCCESS'))).toBe(true);
  const manifest = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
  const tokenizer = await loadTokenizer();

  const embedded = expected.filter((line) => line.kind === 'text' || line.kind === 'truncated');
  const failed = expected.filter((line) => line.kind === 'error' || line.kind === 'rejected');
  expect(manifest.counts).toEqual({
    lines: expected.length,
    embedded: embedded.length,
    skipped_blank: expected.filter((line) => line.kind === 'blank').length,
    failed: failed.length,
    truncated: expected.filter((line) => line.kind === 'truncated').length,
  });
  expect(manifest.shards.length).toBe(Math.ceil(expected.length / shardRows));

  const seen: number[] = [];
  for (const [index, shard] of manifest.shards.entries()) {
    expect(shard.file).toBe(`part-${String(index).padStart(5, '0')}.parquet`);
    expect(shard.first_row).toBe(index * shardRows);
    expect(shard.last_row).toBe(Math.min((index + 1) * shardRows, expected.length) - 1);
    const rows = await queryParquet(`SELECT row, source, line, id, text, dense, sparse FROM read_parquet('${path.join(folder, shard.file)}')`);
    expect(rows.length).toBe(shard.rows);
    const rowNumbers = rows.map((row) => Number(row.row));
    expect(rowNumbers).toEqual([...rowNumbers].sort((a, b) => a - b)); // sorted inside the file
    for (const row of rows) {
      const number = Number(row.row);
      expect(number).toBeGreaterThanOrEqual(shard.first_row);
      expect(number).toBeLessThanOrEqual(shard.last_row);
      seen.push(number);
      const line = expected[number]!;
      expect(line.kind === 'text' || line.kind === 'truncated').toBe(true);
      const text = line.kind === 'truncated' ? tokenizer.truncateToTokens(line.text!, textTokenLimit(parameters.model)) : line.text!;
      expect({ source: row.source, line: Number(row.line), id: row.id, text: row.text }).toEqual({ source: line.source, line: line.line, id: line.id ?? null, text });
      const vectors = emulatorEmbedding(text, parameters);
      expect(row.dense === null ? null : (row.dense as number[])).toEqual(vectors.dense ? Array.from(vectors.dense) : null);
      expect(row.sparse).toEqual(vectors.sparse);
    }
  }
  expect(seen).toEqual(embedded.map((line) => line.row)); // each embedded row exactly once

  const errors = readFileSync(path.join(folder, '_errors.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { row: number; source: string; line: number; code: string; message: string });
  expect(errors.map(({ row, source, line, code }) => ({ row, source, line, code }))).toEqual(
    failed.map(({ row, source, line, code }) => ({ row, source, line, code })),
  );
  for (const error of errors) expect(error.message.length).toBeGreaterThan(0);
  return manifest;
}
