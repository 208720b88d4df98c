import type { OutputFormat } from '../shards/shard-row.js';

/** File names under a job's output prefix (DESIGN "Contract: Output"). */
export const MANIFEST_FILE = '_manifest.json';
export const ERRORS_FILE = '_errors.jsonl';
export const SUCCESS_FILE = '_SUCCESS';
/** At a schedule's root: which output is the last good run (`{"output","job_id","finished_at","counts"}`). */
export const LATEST_FILE = '_latest.json';
/** `--reuse --id-field`: the delta for vector stores (src/reuse/delta-writer.ts). */
export const DELTA_FOLDER = '_delta';
/** `_delta/deletes.jsonl` of a `--reuse --id-field` run (src/reuse/delta-writer.ts writes it). */
export const DELETES_FILE = `${DELTA_FOLDER}/deletes.jsonl`;

/** `_delta/upserts-NNNNN.parquet`: the rows of shard NNNNN whose id is new or whose text changed. */
export function upsertsFileName(shard: number): string {
  return `${DELTA_FOLDER}/upserts-${String(shard).padStart(5, '0')}.parquet`;
}
/** Scratch space of running jobs; finalize removes its job's folder. */
export const TEMP_FOLDER = '_tmp';

/**
 * Whether a key under an output's prefix (the prefix left off) is the output's own: directly
 * under it, or in its `_tmp/` or `_delta/`. Deeper keys belong to other outputs (`s3://b/out/2026/`
 * under `s3://b/out/`), which a run into the parent must not touch.
 */
export function isOwnOutputKey(relativeKey: string): boolean {
  return !relativeKey.includes('/') || relativeKey.startsWith(`${TEMP_FOLDER}/`) || relativeKey.startsWith(`${DELTA_FOLDER}/`);
}

/** What every shard file's name starts with. */
export const SHARD_FILE_PREFIX = 'part-';

/** Whether a name directly under an output prefix is a shard file (`part-00007.parquet`, `.arrow`). */
export function isShardFile(name: string): boolean {
  return /^part-\d+\.(parquet|arrow)$/.test(name);
}

/** `part-00007.parquet`: zero-padded so key order is shard order (more digits past 99,999 shards). */
export function shardFileName(shard: number, format: OutputFormat): string {
  return `${SHARD_FILE_PREFIX}${String(shard).padStart(5, '0')}.${format === 'parquet' ? 'parquet' : 'arrow'}`;
}

/** A shard's error records until finalize merges them into `_errors.jsonl`. */
export function shardErrorsFileName(corpusJobId: string, shard: number): string {
  return `${TEMP_FOLDER}/${corpusJobId}/errors-${String(shard).padStart(5, '0')}.jsonl`;
}
