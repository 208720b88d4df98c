import path from 'node:path';

import { StorageError } from '../errors.js';
import { openInput, parseLocation, type InputTarget } from '../storage/locations.js';
import type { ObjectStore, OpenedObject } from '../storage/object-store.js';
import type { S3ClientSource } from '../storage/s3-store.js';

/** One object of a corpus, in the order rows are numbered (DESIGN "Contract": objects in key order). */
export interface CorpusObject {
  store: ObjectStore;
  /** The key to read from `store`. */
  key: string;
  /**
   * The `source` column and error records: the S3 object key; a local file's path as given; for a
   * local folder, `<folder as given>/<relative path>` with forward slashes, normalised.
   */
  source: string;
  sizeBytes: number;
  /** Its version as listed (ObjectStore: S3's ETag and size, a local file's inode, size and time). */
  version?: string | undefined;
  /** Already being fetched (readAhead); readCorpusLines reads this instead of opening the object. */
  opened?: Promise<OpenedObject>;
}

export interface ListCorpusDependencies {
  /** Needed for `s3://` inputs. */
  s3Client?: S3ClientSource | undefined;
  /** The job's output: a local folder input refuses a link that leads into it. */
  output?: string | undefined;
}

/**
 * The objects of an input (`s3://bucket/key`, `s3://bucket/prefix/`, a local file or folder), in
 * key order, lazily (S3 pages are fetched as the consumer pulls). Skips S3 folder markers (empty
 * objects whose keys end in `/`) and, in local folders, hidden entries (any path part starting with `.`); keeps
 * empty objects (they have no lines). Throws StorageError when the input does not exist or holds
 * no objects, before yielding anything.
 */
export async function* listCorpus(input: string, deps: ListCorpusDependencies = {}): AsyncIterable<CorpusObject> {
  const target = await openInput(parseLocation(input), deps.s3Client, { output: deps.output });
  if (target.mode === 'object') {
    const object = await target.store.stat(target.key);
    if (!object) throw await missingObjectError(input, target);
    yield { store: target.store, key: target.key, source: sourceOf(target, target.key), sizeBytes: object.sizeBytes, version: object.version };
    return;
  }
  let count = 0;
  for await (const object of target.store.list(target.prefix)) {
    if (!isCorpusKey(target, object.key, object.sizeBytes)) continue;
    count += 1;
    yield { store: target.store, key: object.key, source: sourceOf(target, object.key), sizeBytes: object.sizeBytes, version: object.version };
  }
  if (count === 0) {
    throw new StorageError(`input ${input}: no objects found${target.location.kind === 'local' ? ' (hidden files are skipped)' : ''}`);
  }
}

/** Throws the error `listCorpus` would throw if the input is missing or empty; reads at most one page. */
export async function assertInputExists(input: string, deps: ListCorpusDependencies = {}): Promise<void> {
  // Leaving the loop at the first object ends the listing.
  for await (const object of listCorpus(input, deps)) {
    void object;
    return;
  }
}

function isCorpusKey(target: InputTarget, key: string, sizeBytes: number): boolean {
  // An empty object whose key ends in `/` is a folder marker (the S3 console's "Create folder").
  // One with bytes is data, whatever its name: it was dropped without a word.
  if (target.location.kind === 's3') return !(key.endsWith('/') && sizeBytes === 0);
  return !isHiddenKey(key);
}

/** A local folder's entry that listing it skips: any part of its `/`-separated path starts with `.`. */
export function isHiddenKey(key: string): boolean {
  return key.split('/').some((part) => part.startsWith('.'));
}

function sourceOf(target: InputTarget, key: string): string {
  const location = target.location;
  if (location.kind === 's3') return key;
  if (target.mode === 'object') return location.path;
  const folder = location.path.split(path.sep).join('/');
  return path.posix.normalize(`${folder}/${key}`);
}

/** A missing `s3://bucket/key` whose `key/` has objects was almost surely meant as a prefix. */
async function missingObjectError(input: string, target: Extract<InputTarget, { mode: 'object' }>): Promise<StorageError> {
  if (target.location.kind === 's3') {
    for await (const object of target.store.list(`${target.key}/`)) {
      if (!isCorpusKey(target, object.key, object.sizeBytes)) continue;
      return new StorageError(`input ${input}: no such object, but objects exist under ${input}/ (to read them all, use ${input}/)`);
    }
  }
  return new StorageError(`input ${input}: no such object`);
}
