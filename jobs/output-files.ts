import { text } from 'node:stream/consumers';

import { StorageError } from '../src/errors.js';
import type { ObjectStore } from '../src/storage/object-store.js';
import { DELTA_FOLDER, ERRORS_FILE, isOwnOutputKey, isShardFile, LATEST_FILE, MANIFEST_FILE, SUCCESS_FILE, TEMP_FOLDER } from '../src/output/layout.js';
import { OutputTakenError } from './job-errors.js';
import { outputIdentity } from './output-lease.js';
import type { ShardStats } from './shard-ledger.js';

/**
 * The files a run leaves directly under its output prefix. Deeper keys belong to other outputs
 * (`s3://b/out/` and `s3://b/out/2026/` are two outputs) and are never touched, except our own
 * scratch folder `_tmp/`.
 */
export interface OutputLocation {
  store: ObjectStore;
  prefix: string;
}

/**
 * The written shards whose files are not in the output as the ledger recorded them: missing, or of
 * another size (`found`: the size there). One listing of the output, not a request per shard.
 */
export async function shardFilesOutOfPlace(output: OutputLocation, shards: readonly ShardStats[]): Promise<Array<{ shard: ShardStats; found: number | undefined }>> {
  if (shards.length === 0) return [];
  const sizes = new Map<string, number>();
  for await (const object of output.store.list(output.prefix)) sizes.set(object.key.slice(output.prefix.length), object.sizeBytes);
  return shards.filter((shard) => sizes.get(shard.file) !== shard.bytes).map((shard) => ({ shard, found: sizes.get(shard.file) }));
}

/** Files that show an earlier run wrote here: any `part-*`, `_manifest.json`, `_SUCCESS` or `_delta/` file. */
export async function findPreviousRun(output: OutputLocation): Promise<string[]> {
  const found: string[] = [];
  for await (const object of output.store.list(output.prefix)) {
    const name = object.key.slice(output.prefix.length);
    if (isShardFile(name) || name === MANIFEST_FILE || name === SUCCESS_FILE || name.startsWith(`${DELTA_FOLDER}/`)) found.push(name);
  }
  return found;
}

/**
 * Throws OutputTakenError when the output's `_manifest.json` names another job than `jobId`: that
 * run finished writing here after this job's submit found the output empty or cleared it. Only a
 * Redis brought back from an older state (a snapshot) revives a job into that; before, the revived
 * job's split removed the newer run's `_SUCCESS` and its shards replaced the newer run's. Called
 * before a job's steps write to its output (`name`: the output as the job has it, for the message).
 * Returns whether the manifest there is this job's own (an earlier attempt of its finalize wrote it).
 */
export async function assertNoOtherJobsRun(output: OutputLocation, jobId: string, name: string): Promise<boolean> {
  const named = await manifestJobId(output);
  if (named !== undefined && named !== jobId) throw new OutputTakenError(name, named);
  return named === jobId;
}

/** The job the output's `_manifest.json` names; undefined when there is none, or it does not parse. */
export async function manifestJobId(output: OutputLocation): Promise<string | undefined> {
  return readStringField(output, MANIFEST_FILE, 'job_id');
}

/** What an output's `_latest.json` (a schedule's pointer) names, as `latestPointerAt` reads it. */
export interface LatestPointer {
  /** The output it names. */
  latest: string;
  /**
   * Whether that is this very output (`name`, the output as the job has it): a schedule whose
   * `--out` has no placeholder keeps it there. Otherwise the output is the root of a schedule's
   * runs, which sit in folders below it (a template with a placeholder).
   */
  namesThisOutput: boolean;
  /** The schedule that wrote it. */
  schedule: string | undefined;
}

/** The output's `_latest.json`; undefined when there is none, or it does not read as a pointer. */
export async function latestPointerAt(output: OutputLocation, name: string): Promise<LatestPointer | undefined> {
  const pointer = await readJsonObject(output, LATEST_FILE);
  const latest = stringField(pointer, 'output');
  if (latest === undefined) return undefined;
  return { latest, namesThisOutput: outputIdentity(latest) === outputIdentity(name), schedule: stringField(pointer, 'schedule') };
}

/** A string field of a JSON file directly under the output; undefined when the file is not there, does not parse, or has no such string. */
async function readStringField(output: OutputLocation, file: string, field: string): Promise<string | undefined> {
  return stringField(await readJsonObject(output, file), field);
}

async function readJsonObject(output: OutputLocation, file: string): Promise<Record<string, unknown> | undefined> {
  const key = output.prefix + file;
  if (!(await output.store.stat(key))) return undefined;
  const body = await text(await output.store.read(key));
  try {
    const parsed = JSON.parse(body) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function stringField(object: Record<string, unknown> | undefined, field: string): string | undefined {
  const value = object?.[field];
  return typeof value === 'string' ? value : undefined;
}

/**
 * `--overwrite`: removes an earlier run's files, `_SUCCESS` first so no reader trusts a half-removed
 * output, and any writes it left half done.
 */
export async function clearPreviousRun(output: OutputLocation): Promise<number> {
  await output.store.delete(output.prefix + SUCCESS_FILE);
  let removed = 0;
  for await (const object of output.store.list(output.prefix)) {
    const name = object.key.slice(output.prefix.length);
    if (isShardFile(name) || name === MANIFEST_FILE || name === ERRORS_FILE || name.startsWith(`${TEMP_FOLDER}/`) || name.startsWith(`${DELTA_FOLDER}/`)) {
      await output.store.delete(object.key);
      removed += 1;
    }
  }
  await output.store.abortIncompleteWrites(output.prefix, isOwnOutputKey);
  return removed;
}

/**
 * Writes and removes a scratch object, so that a run finds out at submit, not after paying for its
 * first shard (or at finalize, which removes `_tmp/`), that the output cannot be written or cleaned
 * (read-only credentials, a path under a file). Storage trouble that may pass is thrown as it is.
 */
export async function checkOutputWritable(output: OutputLocation, jobId: string, name: string): Promise<void> {
  const key = `${output.prefix}${TEMP_FOLDER}/${jobId}/write-check`;
  try {
    await output.store.write(key, '');
    await output.store.delete(key);
  } catch (error) {
    if (!(error instanceof StorageError)) throw error;
    throw new StorageError(`cannot write to the output ${name}: ${error.message}`, { cause: error });
  }
}
