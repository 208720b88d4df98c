import type { ObjectStore } from '../src/storage/object-store.js';
import { DELTA_FOLDER, ERRORS_FILE, MANIFEST_FILE, SUCCESS_FILE, TEMP_FOLDER } from '../src/output/layout.js';

/**
 * The files a run leaves directly under its output prefix. Deeper keys belong to other outputs
 * (`s3://b/out/` and `s3://b/out/2026/` are two outputs) and are never touched, except our own
 * scratch folder `_tmp/`.
 */
export interface OutputLocation {
  store: ObjectStore;
  prefix: string;
}

const isShardFile = (name: string): boolean => /^part-\d+\.(parquet|arrow)$/.test(name);

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
  await output.store.abortIncompleteWrites(output.prefix);
  return removed;
}
