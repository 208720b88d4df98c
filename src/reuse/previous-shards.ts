import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

import { ReuseUnavailableError, StorageUnavailableError } from '../errors.js';
import type { OutputFormat } from '../shards/shard-row.js';
import type { PreviousOutput } from './previous-output.js';

/**
 * The shards of a previous output as the reader of reused rows needs them (previous-vectors.ts):
 * local files, one at a time. The shard thread, which reads them, has no object store: it asks the
 * main thread for each copy (shard-thread-messages.ts), and the main thread makes it with
 * {@link PreviousShardCopies}.
 */
export interface PreviousShards {
  /** The previous output, for messages. */
  location: string;
  format: OutputFormat;
  /** The manifest's file of each shard, by index. */
  files: readonly string[];
  /** A local path holding shard `shard`'s file. Asking for another shard may delete it. */
  localCopy(shard: number): Promise<string>;
}

/** Temporary folders of copies are `embedq-previous-<pid>-<random>`: the pid tells a stale one. */
const COPIES_PREFIX = 'embedq-previous-';
const COPIES_FOLDER = new RegExp(`^${COPIES_PREFIX}(\\d+)-`);

/**
 * Copies of a previous output's shards in a temporary folder, made when asked for (streamed from
 * the store: never in memory whole), one at a time: the copy before is deleted when the next is
 * asked for, and the folder by `dispose`. A file is read through parquet-wasm a row group at a
 * time, which needs random access (a file-backed Blob), hence a local copy rather than a stream.
 */
export class PreviousShardCopies implements PreviousShards {
  readonly location: string;
  readonly format: OutputFormat;
  readonly files: readonly string[];
  private folder: Promise<string> | undefined;
  private current: string | undefined;

  constructor(private readonly previous: PreviousOutput) {
    this.location = previous.location;
    this.format = previous.manifest.output_format;
    this.files = previous.manifest.shards.map((shard) => shard.file);
  }

  async localCopy(shard: number): Promise<string> {
    const file = this.files[shard];
    if (file === undefined) throw new ReuseUnavailableError(`${this.location}: the manifest has no shard ${shard}`);
    const folder = await (this.folder ??= mkdtemp(path.join(tmpdir(), `${COPIES_PREFIX}${process.pid}-`)));
    if (this.current) await rm(this.current, { force: true });
    const local = (this.current = path.join(folder, `shard-${shard}`));
    // A failure on this side (a full or unwritable TMPDIR) is this worker's, not the previous
    // output's: retried (maybe on another worker) instead of failing the job as REUSE_UNAVAILABLE.
    let localFailure: Error | undefined;
    const target = createWriteStream(local).on('error', (error) => (localFailure = error));
    try {
      await pipeline(await this.previous.store.read(this.previous.prefix + file), target);
    } catch (error) {
      if (localFailure) throw new Error(`could not copy previous shard ${file} to ${local}: ${localFailure.message}`, { cause: localFailure });
      if (error instanceof StorageUnavailableError) throw error;
      throw new ReuseUnavailableError(`${this.location}: shard ${file} unreadable: ${(error as Error).message}`, { cause: error });
    }
    return local;
  }

  async dispose(): Promise<void> {
    const folder = this.folder;
    this.folder = undefined;
    this.current = undefined;
    const made = await folder?.catch(() => undefined);
    if (made) await rm(made, { recursive: true, force: true });
  }
}

/**
 * Removes the copies folders of processes that no longer run (a worker killed while writing a
 * `--reuse` shard leaves one, up to a previous shard's size). Only folders untouched for
 * `olderThanMs` go: a pid is only this host's (or container's) view, so a live copy elsewhere on a
 * shared temporary folder must not be taken for a stale one; a live folder changes with each copy.
 *
 * @returns the folders removed
 */
export async function removeStaleShardCopies(folder = tmpdir(), olderThanMs = 10 * 60_000): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(folder).catch(() => [])) {
    const pid = COPIES_FOLDER.exec(name)?.[1];
    if (pid === undefined || processRuns(Number(pid))) continue;
    const modified = await stat(path.join(folder, name)).then((found) => found.mtimeMs, () => undefined);
    if (modified === undefined || Date.now() - modified < olderThanMs) continue;
    await rm(path.join(folder, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
