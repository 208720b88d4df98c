import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, type Dirent, type Stats, type WriteStream } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readdir, realpath, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { EmbedqError, InputChangedError, StorageError, StorageUnavailableError } from '../errors.js';
import { CountedChunks } from './counted-chunks.js';
import { mapStreamErrors } from './map-stream-errors.js';
import type { ObjectStore, OpenedObject, StoredObject, WriteOptions } from './object-store.js';

/** Names of in-flight writes (`<file>.tmp-<16 hex>`); listings skip them. */
const TEMP_FILE = /\.tmp-[0-9a-f]{16}$/;
/** How often a local file being read is checked for a rewrite in place (on its next chunk). */
const CHANGE_CHECK_MS = 500;

/**
 * An ObjectStore over a local folder, with S3's semantics: keys are `/`-separated paths relative
 * to the folder, listings are recursive and in byte order of the key, and a written file appears
 * only complete. Folders are created on write and never reported (S3 has none).
 */
export class LocalObjectStore implements ObjectStore {
  /** The folder as it was given, for messages. */
  readonly description: string;
  /** The folder, resolved once against the working directory. */
  readonly root: string;

  readonly #corpus: { output: string | undefined } | undefined;

  /**
   * `corpus`: a corpus input, every file of which must be read. Its listings pass over hidden
   * entries (a name starting with `.`: the corpus reader never reads them), enter symbolic links
   * to folders and refuse names that are not UTF-8 (both used to be skipped without a word, their
   * lines lost), and refuse a link that leads into `output` (canonical; the job's own output) or a
   * folder holding it: the run would read its own files as corpus lines. Off for outputs:
   * `--overwrite` and the clean-up of interrupted writes delete what a listing finds, and only
   * files embedq wrote (UTF-8 names, no links) matter there.
   */
  constructor(folder: string, options: { corpus?: { output?: string | undefined } } = {}) {
    this.description = folder;
    this.root = path.resolve(folder);
    this.#corpus = options.corpus && { output: options.corpus.output };
  }

  /** The file path of `key`. Throws StorageError for keys that could leave the folder. */
  pathOf(key: string): string {
    const segments = key.split('/');
    // A backslash is a separator only where the system says so (Windows); on Linux `c\d.txt` is a
    // file like any other, and refusing it failed the whole job.
    const separator = path.sep === '\\' && key.includes('\\');
    if (key === '' || separator || key.includes('\0') || segments.some((part) => part === '' || part === '.' || part === '..')) {
      throw new StorageError(`invalid key ${JSON.stringify(key)} for ${this.description}: keys are relative paths without empty, "." or ".." parts${path.sep === '\\' ? ' or backslashes' : ''}, and without NUL`);
    }
    return path.join(this.root, ...segments);
  }

  list(prefix: string): AsyncIterable<StoredObject> {
    return this.#walk(this.root, '', prefix, []);
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    const file = this.pathOf(key);
    try {
      const info = await stat(file);
      // A folder is not an object, just as `dir/` is not one in S3.
      return info.isFile() ? { key, sizeBytes: info.size, version: localVersion(info) } : undefined;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw this.#error(error, 'stat', key);
    }
  }

  async read(key: string): Promise<Readable> {
    return (await this.open(key)).body;
  }

  async open(key: string, options: { from?: number } = {}): Promise<OpenedObject> {
    const file = this.pathOf(key);
    let handle;
    let version;
    try {
      handle = await open(file, 'r');
      const info = await handle.stat();
      if (!info.isFile()) {
        await handle.close();
        throw new StorageError(`read ${this.#display(key)}: not a file`);
      }
      // Writes here replace a file by renaming a new one over it (a new inode); a program that
      // rewrites it in place changes its time (and most often its size).
      version = localVersion(info);
    } catch (error) {
      throw this.#error(error, 'read', key);
    }
    return { body: mapStreamErrors(this.#unchangedChunks(handle, version, key, options.from ?? 0), (error) => this.#error(error, 'read', key)), version };
  }

  /**
   * The file's bytes from `from`, checked against the version opened at its end and, on the way,
   * whenever a chunk comes half a second or more after the last check: a file rewritten in place
   * while it was read (`cp` over it keeps the inode) gave rows half from each version, and the job
   * completed. Checked only at the end, a file appended to while a slow job read it was found
   * changed after 5,510 of its 6,000 lines had been paid for. Closes the handle however the read ends.
   */
  async *#unchangedChunks(handle: FileHandle, version: string, key: string, from: number): AsyncGenerator<Buffer> {
    const check = async (where: string): Promise<void> => {
      const now = localVersion(await handle.stat());
      if (now !== version) {
        throw new InputChangedError(
          `read ${this.#display(key)}: the file changed while it was read (inode:size:time ${version} when opened, ${now} ${where}: rewritten in place), so its lines may mix both versions. Submit again once it is written (write a new file and rename it over the old one)`,
        );
      }
    };
    try {
      let checkedAt = performance.now();
      for await (const chunk of handle.createReadStream({ start: from, autoClose: false })) {
        if (performance.now() - checkedAt >= CHANGE_CHECK_MS) {
          await check('on the way');
          checkedAt = performance.now();
        }
        yield chunk as Buffer;
      }
      await check('at its end');
    } finally {
      await handle.close();
    }
  }

  async readRange(key: string, start: number, end: number): Promise<Uint8Array> {
    const bytes = Buffer.alloc(Math.max(0, end - start));
    try {
      const handle = await open(this.pathOf(key), 'r');
      try {
        let filled = 0;
        while (filled < bytes.length) {
          const { bytesRead } = await handle.read(bytes, filled, bytes.length - filled, start + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        return bytes.subarray(0, filled);
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw this.#error(error, 'read', key);
    }
  }

  async write(key: string, body: Uint8Array | string, options: WriteOptions = {}): Promise<void> {
    const { signal } = options;
    const file = this.pathOf(key);
    // Same folder as the target, so the rename is atomic (one file system); readers see the old
    // file or the new one, never a partial one.
    const temporary = `${file}.tmp-${randomBytes(8).toString('hex')}`;
    try {
      await makeFolder(path.dirname(file));
      await writeFile(temporary, body, { signal });
      signal?.throwIfAborted();
      await this.#renameTemporary(temporary, file, key);
    } catch (error) {
      await rm(temporary, { force: true }).catch(() => undefined);
      if (signal?.aborted) throw signal.reason;
      throw this.#error(error, 'write', key);
    }
  }

  async writeStream(key: string, chunks: AsyncIterable<Uint8Array>, options: WriteOptions = {}): Promise<number> {
    const { signal } = options;
    const file = this.pathOf(key);
    // As in `write`: a temp file beside the target, renamed only once every chunk is on disk.
    const temporary = `${file}.tmp-${randomBytes(8).toString('hex')}`;
    const counted = new CountedChunks(chunks);
    let sink: WriteStream | undefined;
    try {
      await makeFolder(path.dirname(file));
      sink = createWriteStream(temporary);
      await pipeline(Readable.from(counted, { objectMode: false }), sink, { signal });
      signal?.throwIfAborted();
      await this.#renameTemporary(temporary, file, key);
      return counted.bytes;
    } catch (error) {
      // A source that failed at once left the file still being opened: removed before the open
      // created it, the temp file stayed. The stream closes once its open is done.
      if (sink && !sink.closed) await once(sink, 'close').catch(() => undefined);
      await rm(temporary, { force: true }).catch(() => undefined);
      if (counted.failure) throw counted.failure.error;
      if (signal?.aborted) throw signal.reason;
      throw this.#error(error, 'write', key);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    try {
      await rm(file, { force: true });
    } catch (error) {
      throw this.#error(error, 'delete', key);
    }
    await this.#removeEmptyFolders(path.dirname(file));
  }

  async abortIncompleteWrites(prefix: string, owned: (relativeKey: string) => boolean = () => true): Promise<number> {
    let removed = 0;
    const sweep = async (folder: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(folder, { withFileTypes: true });
      } catch (error) {
        if (isMissing(error)) return;
        throw this.#error(error, 'list', path.relative(this.root, folder) || '.');
      }
      for (const entry of entries) {
        const full = path.join(folder, entry.name);
        if (entry.isDirectory()) await sweep(full);
        if (entry.isDirectory() || !TEMP_FILE.test(entry.name)) continue;
        const key = path.relative(this.root, full).split(path.sep).join('/');
        if (key.startsWith(prefix) && owned(key.slice(prefix.length))) {
          await rm(full, { force: true });
          removed += 1;
        }
      }
    };
    // From the prefix's folder (a prefix is '' or ends in '/'), not from the root.
    await sweep(prefix === '' ? this.root : this.pathOf(prefix.replace(/\/+$/, '')));
    return removed;
  }

  /**
   * A temp file gone before its rename was removed by another writer's cleanup (an `--overwrite`
   * of the output, or a finalize, that took it for an interrupted write): the write can simply be
   * made again, so it is a retryable failure, where the ENOENT made it a permanent one.
   */
  async #renameTemporary(temporary: string, file: string, key: string): Promise<void> {
    try {
      await rename(temporary, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || (await stat(path.dirname(file)).catch(() => undefined)) === undefined) throw error;
      throw new StorageUnavailableError(`write ${this.#display(key)}: its temp file was removed before it was renamed (another run cleaned the folder); write again`, { cause: error });
    }
  }

  /** S3 has no folders: a folder emptied by a delete goes too (up to, not including, the root). */
  async #removeEmptyFolders(folder: string): Promise<void> {
    while (folder.startsWith(this.root + path.sep)) {
      try {
        await rmdir(folder);
      } catch {
        return; // not empty, or already gone
      }
      folder = path.dirname(folder);
    }
  }

  /**
   * Yields the files under `folder` whose keys start with `prefix`, in byte order of the key.
   * Sorting each folder's entries with folders compared as `name/` gives the global key order
   * (every key inside `name/` sorts exactly where `name/` does), so the walk needs no buffering
   * beyond one folder's entries, and folders that cannot match `prefix` are not read.
   */
  async *#walk(folder: string, folderKey: string, prefix: string, ancestors: string[]): AsyncGenerator<StoredObject> {
    let entries: Dirent<Buffer>[];
    try {
      // Names as bytes: a name that is not UTF-8 read as a string no longer names its file.
      entries = await readdir(folder, { withFileTypes: true, encoding: 'buffer' });
    } catch (error) {
      // A root that is a file is no folder to read or write (an output given as a file's path):
      // say so, rather than list it as empty and fail at the first write.
      if (folderKey === '' && (error as NodeJS.ErrnoException).code === 'ENOTDIR' && (await isFile(folder))) {
        throw new StorageError(`list ${this.root}: it is a file, not a folder`);
      }
      // A missing root lists as empty, like an empty S3 prefix; so does a folder deleted while
      // listing, except in a corpus (below).
      if (isMissing(error) && !(this.#corpus && folderKey !== '')) return;
      throw this.#error(error, 'list', folderKey || '.');
    }
    const children: { name: string; sortKey: Buffer; isFolder: boolean; isLink: boolean }[] = [];
    for (const entry of entries) {
      // Hidden entries of a corpus are never read: their names and links must not refuse the input.
      if (this.#corpus && entry.name[0] === DOT) continue;
      const name = entry.name.toString('utf8');
      if (!Buffer.from(name).equals(entry.name)) {
        // Read as UTF-8 it names no file: it was skipped as if deleted, and its lines lost unsaid.
        if (!this.#corpus) continue;
        throw new StorageError(`list ${this.#display(folderKey + escapedName(entry.name))}: the name is not UTF-8, so it cannot be a key (keys are UTF-8, as in S3); rename it`);
      }
      const isLink = entry.isSymbolicLink();
      const target = isLink ? await linkTarget(path.join(folder, name)) : undefined;
      if (typeof target === 'string' && this.#corpus) {
        // A link to an unmounted share was skipped as if it were not there, its lines lost unsaid.
        throw new StorageError(`list ${this.#display(folderKey + name)}: the link leads nowhere (${target}): its target is missing, not mounted, or a loop of links; remove it or mount what it points to`);
      }
      const folderHere = entry.isDirectory() || (this.#corpus !== undefined && typeof target === 'object' && target.isDirectory());
      if (!folderHere && !entry.isFile() && !(typeof target === 'object' && target.isFile())) continue;
      children.push({ name, isFolder: folderHere, isLink, sortKey: Buffer.concat([entry.name, folderHere ? SLASH : EMPTY]) });
    }
    children.sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));

    for (const child of children) {
      const key = folderKey + child.name;
      if (child.isFolder) {
        const childFolderKey = `${key}/`;
        if (childFolderKey.startsWith(prefix) || prefix.startsWith(childFolderKey)) {
          // The real paths from the root down: a link to one of them would be walked forever.
          const childFolder = path.join(folder, child.name);
          let real: string;
          try {
            if (ancestors.length === 0) ancestors = [await realpath(folder)];
            real = child.isLink ? await realpath(childFolder) : path.join(ancestors.at(-1)!, child.name);
          } catch (error) {
            // Deleted while listing: it is simply no longer there (in a corpus, see below).
            if (isMissing(error) && !this.#corpus) continue;
            throw this.#error(error, 'list', key);
          }
          if (ancestors.includes(real)) {
            throw new StorageError(`list ${this.#display(key)}: the link leads back to a folder it is in (${real}), a loop; remove it or point it elsewhere`);
          }
          const output = this.#corpus?.output;
          if (child.isLink && output !== undefined && (isWithin(real, output) || isWithin(output, real))) {
            throw new StorageError(`list ${this.#display(key)}: the link leads to ${real}, which holds or is inside this job's output ${output}; the run would read its own files as corpus lines. Remove the link or choose another output`);
          }
          yield* this.#walk(childFolder, childFolderKey, prefix, [...ancestors, real]);
        }
      } else if (key.startsWith(prefix) && !TEMP_FILE.test(child.name)) {
        const object = await this.stat(key).catch((error: unknown) => {
          throw this.#error(error, 'list', key);
        });
        // Undefined: deleted between readdir and stat. A corpus's folder is read whole when the walk
        // reaches it, and its files are looked at one by one as the split pulls them, minutes later
        // behind a slow job: skipped, a file removed meanwhile lost its lines without a record (and
        // the job completed), where S3 fails the read of an object removed after it was listed.
        if (!object && this.#corpus) throw new StorageError(`list ${this.#display(key)}: no such file: it was removed while the job read the corpus (after its folder was listed)`);
        if (object) yield object;
      }
    }
  }

  #display(key: string): string {
    return path.join(this.description, ...key.split('/'));
  }

  #error(error: unknown, operation: string, key: string): EmbedqError {
    if (error instanceof EmbedqError) return error;
    const code = (error as NodeJS.ErrnoException | null)?.code;
    const where = `${operation} ${this.#display(key)}`;
    const reason = code ? (REASONS[code] ?? withCode(code, (error as Error).message)) : String(error);
    const message = `${where}: ${reason}`;
    return code && TRANSIENT_CODES.has(code) ? new StorageUnavailableError(message, { cause: error }) : new StorageError(message, { cause: error });
  }
}

const REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EISDIR: 'is a folder, not a file',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

/** Failures that may pass: descriptor exhaustion, busy or flaky (network) file systems. */
const TRANSIENT_CODES = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'EBUSY', 'EIO', 'ETIMEDOUT', 'ECONNRESET', 'ESTALE']);

/** Node's message with its code in front, once: most already start with it (`ENOSPC: no space left on device, write`). */
function withCode(code: string, message: string): string {
  return message.startsWith(`${code}:`) ? message : `${code}: ${message}`;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

const SLASH = Buffer.from('/');
const DOT = 0x2e;
const EMPTY = Buffer.alloc(0);

/** A file name for messages: ASCII as it is, other bytes as `\xNN` (as `ls -b` shows them). */
function escapedName(name: Buffer): string {
  return [...name].map((byte) => (byte < 0x80 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`)).join('');
}

/** Whether `inner` is `outer` or a path under it (both absolute and canonical). */
function isWithin(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer.endsWith(path.sep) ? outer : outer + path.sep);
}

/**
 * What a symbolic link leads to, or why it leads nowhere (`ENOENT`: dangling, `ELOOP`: a loop of
 * links, ...); undefined when the link itself is gone (deleted while listing).
 */
async function linkTarget(link: string): Promise<Stats | string | undefined> {
  try {
    return await stat(link);
  } catch (error) {
    if (!(await lstat(link).then(() => true, () => false))) return undefined;
    return (error as NodeJS.ErrnoException).code ?? String(error);
  }
}

/**
 * `mkdir -p`, one folder at a time. Node's recursive mkdir loops for good, a core busy, when mkdir
 * answers ENOENT under a parent that exists (`/proc/sys`): `submit --out /proc/sys/x` never ended.
 * A dangling link on the way was "a part of the path is a file, not a folder".
 */
async function makeFolder(folder: string): Promise<void> {
  try {
    await mkdir(folder);
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return assertFolder(folder);
    const parent = path.dirname(folder);
    if (code !== 'ENOENT' || parent === folder) throw error;
    await makeFolder(parent);
  }
  try {
    await mkdir(folder);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return assertFolder(folder);
    if (code === 'ENOENT') throw new StorageError(`cannot create the folder ${folder}: ${path.dirname(folder)} takes no new folders (ENOENT)`, { cause: error });
    throw error;
  }
}

/** Something is at `folder`: a folder (or a link to one), or why it cannot hold files. */
async function assertFolder(folder: string): Promise<void> {
  const target = await linkTarget(folder);
  if (typeof target === 'string') {
    throw new StorageError(`cannot create files in ${folder}: it is a link that leads nowhere (${target}): its target is missing, not mounted, or a loop of links`);
  }
  if (target !== undefined && !target.isDirectory()) throw new StorageError(`cannot create files in ${folder}: it is a file, not a folder`);
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/** A file's version as `open` and `stat` report it. */
function localVersion(info: { ino: number; size: number; mtimeMs: number }): string {
  return `${info.ino}:${info.size}:${info.mtimeMs}`;
}
