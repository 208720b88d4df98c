import { text } from 'node:stream/consumers';

import * as z from 'zod';

import { ReuseUnavailableError, StorageUnavailableError } from '../errors.js';
import { isShardFile, LATEST_FILE, MANIFEST_FILE, SHARD_FILE_PREFIX, SUCCESS_FILE, TEMP_FOLDER } from '../output/layout.js';
import type { ObjectStore } from '../storage/object-store.js';

/**
 * Finds the output a `--reuse` run builds on: an output folder (`_manifest.json` + `_SUCCESS`),
 * or a schedule root whose `_latest.json` names one. Every way this can go wrong becomes one
 * ReuseUnavailableError naming the file and the reason; only a storage outage (retryable) is
 * thrown as such, so the job retries instead of embedding everything for a network blip.
 */

/** The parts of `_manifest.json` reuse relies on. */
const PreviousManifest = z.object({
  job_id: z.string(),
  output: z.string(),
  model: z.string(),
  dimension: z.number().int().positive(),
  output_type: z.string(),
  output_format: z.enum(['parquet', 'arrow']),
  /** `failed`: how many error records `_errors.jsonl` has (for the index's memory budget). */
  counts: z.object({ failed: z.number().int().nonnegative() }).partial().optional(),
  shards: z.array(z.object({ file: z.string().min(1), first_row: z.number().int(), last_row: z.number().int(), rows: z.number().int().nonnegative() })),
});
export type PreviousManifest = z.infer<typeof PreviousManifest>;

/** `schedule` is absent from pointers written before it was recorded: those are still followed. */
const LatestPointer = z.object({ output: z.string().min(1), job_id: z.string(), schedule: z.string().optional() });

export interface PreviousOutput {
  /** The output folder that was read (after following `_latest.json`). */
  location: string;
  store: ObjectStore;
  /** Key prefix of the output's files in `store` (`''` or ending in `/`). */
  prefix: string;
  manifest: PreviousManifest;
}

/** Opens an output location as a store plus prefix (the caller's `openStore` with its S3 client). */
export type OpenLocation = (location: string) => { store: ObjectStore; prefix: string };

/**
 * `schedule`: the schedule whose run this is. A pointer another schedule wrote is not followed:
 * two schedules sharing a root (refused at `add` since, but Redis may hold older ones) would
 * otherwise each build on the other's runs, sending every line and missing the deletes.
 * `output`: the run's own output, which a pointer may name (the run replaces it, so it is no base).
 */
export async function resolvePreviousOutput(location: string, open: OpenLocation, options: { schedule?: string | null; output?: string } = {}): Promise<PreviousOutput> {
  const root = open(location);
  const latest = await readJson(root.store, root.prefix + LATEST_FILE, location);
  if (latest !== undefined) {
    const pointer = LatestPointer.safeParse(latest);
    if (!pointer.success) throw new ReuseUnavailableError(`${join(location, LATEST_FILE)}: not a valid pointer (${pointer.error.issues[0]?.message ?? 'bad shape'})`);
    const writer = pointer.data.schedule;
    if (options.schedule && writer !== undefined && writer !== options.schedule) {
      throw new ReuseUnavailableError(`${join(location, LATEST_FILE)}: written by schedule ${writer}, not by this run's schedule ${options.schedule} (their roots are shared); not followed`);
    }
    const own = options.output?.replace(/\/+$/, '');
    if (own !== undefined && pointer.data.output.replace(/\/+$/, '') === own) {
      // Said as such: reading it gave "no _manifest.json", as an --overwrite run had cleared it.
      throw new ReuseUnavailableError(`${join(location, LATEST_FILE)} names this job's own output ${options.output}, which the job replaces; not followed`);
    }
    // A schedule whose template has no placeholder keeps `_latest.json` in its own output.
    const via = pointer.data.output !== location ? `named by ${join(location, LATEST_FILE)}` : undefined;
    const previous = await openOutput(pointer.data.output, open, via);
    // Rewritten since the pointer was written (an `--overwrite` submit by hand): its rows are not
    // the run the schedule last published, so its delta would miss the deletes in between.
    if (previous.manifest.job_id !== pointer.data.job_id) {
      throw new ReuseUnavailableError(
        `${previous.location}: ${join(location, LATEST_FILE)} names job ${pointer.data.job_id} there, but the output was since rewritten by job ${previous.manifest.job_id}`,
      );
    }
    return previous;
  }
  // A schedule's root before its first good run: nothing to build on yet, which is no fault of the
  // root (it was called "not an embedq output or schedule root").
  if (options.schedule && !(await root.store.stat(root.prefix + SUCCESS_FILE)) && !(await root.store.stat(root.prefix + MANIFEST_FILE))) {
    throw new ReuseUnavailableError(`${location}: no ${LATEST_FILE} yet: schedule ${options.schedule} has no earlier good run to build on, so every line is embedded`);
  }
  return openOutput(location, open, undefined);
}

async function openOutput(location: string, open: OpenLocation, via: string | undefined): Promise<PreviousOutput> {
  const { store, prefix } = open(location);
  const where = via ? `${location} (${via})` : location;
  if (!(await store.stat(prefix + SUCCESS_FILE))) {
    if (await store.stat(prefix + MANIFEST_FILE)) throw new ReuseUnavailableError(`${where}: no ${SUCCESS_FILE}, the run did not finish`);
    // Shards (or a run's scratch files) without a manifest: a run is writing this output (an
    // --overwrite run), or stopped before it finished.
    const isShard = (key: string): boolean => isShardFile(key.slice(prefix.length));
    if ((await hasAny(store.list(prefix + SHARD_FILE_PREFIX), isShard)) || (await hasAny(store.list(`${prefix}${TEMP_FOLDER}/`)))) {
      throw new ReuseUnavailableError(`${where}: no ${MANIFEST_FILE} yet; a run is writing this output (its shards are there), or stopped before it finished`);
    }
    throw new ReuseUnavailableError(`${where}: no ${MANIFEST_FILE} or ${LATEST_FILE}; not an embedq output or schedule root`);
  }
  const raw = await readJson(store, prefix + MANIFEST_FILE, location);
  if (raw === undefined) throw new ReuseUnavailableError(`${join(where, MANIFEST_FILE)}: missing although ${SUCCESS_FILE} is there`);
  const manifest = PreviousManifest.safeParse(raw);
  if (!manifest.success) {
    const issue = manifest.error.issues[0];
    throw new ReuseUnavailableError(`${join(where, MANIFEST_FILE)}: ${issue?.path.join('.') || 'manifest'}: ${issue?.message ?? 'bad shape'}`);
  }
  return { location, store, prefix, manifest: manifest.data };
}

/** The parsed JSON, or undefined when the file does not exist. */
async function readJson(store: ObjectStore, key: string, location: string): Promise<unknown> {
  if (!(await store.stat(key))) return undefined;
  let body: string;
  try {
    body = await text(await store.read(key));
  } catch (error) {
    if (error instanceof StorageUnavailableError) throw error;
    throw new ReuseUnavailableError(`${join(location, key.split('/').pop()!)}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(body) as unknown;
  } catch (error) {
    throw new ReuseUnavailableError(`${join(location, key.split('/').pop()!)}: not valid JSON (${(error as Error).message})`, { cause: error });
  }
}

function join(location: string, file: string): string {
  return location.endsWith('/') ? `${location}${file}` : `${location}/${file}`;
}

/** Whether a listing holds an object (one whose key passes `test`, when given); stops at the first. */
async function hasAny(objects: AsyncIterable<{ key: string }>, test: (key: string) => boolean = () => true): Promise<boolean> {
  for await (const object of objects) if (test(object.key)) return true;
  return false;
}
