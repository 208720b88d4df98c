import { realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError, StorageError } from '../errors.js';
import { LocalObjectStore } from './local-store.js';
import type { ObjectStore } from './object-store.js';
import { type S3ClientSource, S3ObjectStore } from './s3-store.js';

/** Where an input or output lives: an S3 bucket and key (or prefix), or a local path. */
export type Location = { kind: 's3'; bucket: string; key: string } | { kind: 'local'; path: string };

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
/** Permissive on purpose (legacy buckets may have capitals or `_`); S3 itself rejects bad names. */
const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Parses `s3://bucket`, `s3://bucket/key`, `s3://bucket/prefix/` or a local path. The key is kept
 * exactly as written (S3 keys may contain `//`); a local path is kept as given, so messages and
 * `source` values show what the user typed. Throws ConfigError for other schemes or a missing
 * bucket.
 */
export function parseLocation(text: string): Location {
  if (text === '') throw new ConfigError('location is empty: give s3://bucket/key, s3://bucket/prefix/ or a local path');
  const scheme = SCHEME.exec(text)?.[1];
  if (scheme === undefined) return { kind: 'local', path: text };
  if (scheme.toLowerCase() !== 's3') {
    throw new ConfigError(`unsupported location ${JSON.stringify(text)}: only s3://bucket/key, s3://bucket/prefix/ and local paths are supported`);
  }
  const rest = text.slice(scheme.length + 3);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) {
    throw new ConfigError(`invalid location ${JSON.stringify(text)}: expected s3://bucket/key with a bucket name`);
  }
  // AWS keeps `.` and `..` as literal key parts, some S3 servers resolve them (s3rver), MinIO
  // refuses them: either way two spellings could name one folder, and `zz/../out` slipped past the
  // output lease and the output-inside-input check, mixing two runs' shards under one _SUCCESS.
  if (key.split('/').some((part) => part === '.' || part === '..')) {
    throw new ConfigError(`invalid location ${JSON.stringify(text)}: "." and ".." are not allowed as parts of an S3 key`);
  }
  return { kind: 's3', bucket, key };
}

/**
 * A local path as the file system sees it: absolute, with symbolic links resolved in the part that
 * exists (an output folder is often made by the run). Two spellings of one folder, through a
 * link or not, give one path: the output lease and the output-inside-input check compare these
 * (a link to a leased folder let a second job write into it).
 */
export function canonicalLocalPath(location: string): string {
  const absolute = path.resolve(location);
  const missing: string[] = [];
  for (let existing = absolute; ; existing = path.dirname(existing)) {
    try {
      return path.join(realpathSync(existing), ...missing.reverse());
    } catch {
      if (existing === path.dirname(existing)) return absolute;
      missing.push(path.basename(existing));
    }
  }
}

/** Formats a location back into the text form `parseLocation` reads. */
export function formatLocation(location: Location): string {
  return location.kind === 's3' ? `s3://${location.bucket}/${location.key}` : location.path;
}

/**
 * Opens an OUTPUT location: the store plus the key prefix every output file goes under. S3: the
 * bucket, prefix normalised to end with `/` (unless empty, the bucket root). Local: the folder
 * (created on first write), prefix ''.
 */
export function openStore(location: Location, s3Client?: S3ClientSource): { store: ObjectStore; prefix: string } {
  if (location.kind === 'local') return { store: new LocalObjectStore(location.path), prefix: '' };
  const prefix = location.key === '' || location.key.endsWith('/') ? location.key : `${location.key}/`;
  return { store: new S3ObjectStore(requireClient(s3Client, location), location.bucket), prefix };
}

/**
 * An INPUT location, resolved: one object (`s3://bucket/key`, a local file), or every object
 * under a prefix (`s3://bucket/prefix/`, `s3://bucket`, a local folder).
 */
export type InputTarget =
  | { mode: 'object'; store: ObjectStore; key: string; location: Location }
  | { mode: 'prefix'; store: ObjectStore; prefix: string; location: Location };

/**
 * Opens an INPUT location. S3 needs no I/O here (a key ending in `/`, or none, is a prefix); a
 * local path is checked: a file is one object (in a store at its folder), a folder is a prefix,
 * anything else throws StorageError naming the path. `output`: the job's output, for a folder's
 * links (LocalObjectStore's `corpus`).
 */
export async function openInput(location: Location, s3Client?: S3ClientSource, options: { output?: string | undefined } = {}): Promise<InputTarget> {
  if (location.kind === 's3') {
    const store = new S3ObjectStore(requireClient(s3Client, location), location.bucket);
    return location.key === '' || location.key.endsWith('/')
      ? { mode: 'prefix', store, prefix: location.key, location }
      : { mode: 'object', store, key: location.key, location };
  }
  let info;
  try {
    info = await stat(location.path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' || code === 'ENOTDIR' ? 'no such file or folder' : (error as Error).message;
    throw new StorageError(`input ${location.path}: ${reason}`, { cause: error });
  }
  if (info.isDirectory()) {
    // A folder's listing follows links: one into the job's own output must be refused (the check at submit sees no links).
    const output = options.output === undefined || options.output.startsWith('s3://') ? undefined : canonicalLocalPath(options.output);
    return { mode: 'prefix', store: new LocalObjectStore(location.path, { corpus: { output } }), prefix: '', location };
  }
  if (info.isFile()) {
    return { mode: 'object', store: new LocalObjectStore(path.dirname(location.path)), key: path.basename(location.path), location };
  }
  throw new StorageError(`input ${location.path}: not a regular file or folder`);
}

function requireClient(s3Client: S3ClientSource | undefined, location: Location): S3ClientSource {
  if (!s3Client) throw new ConfigError(`${formatLocation(location)}: an S3 client is needed for s3:// locations`);
  return s3Client;
}
