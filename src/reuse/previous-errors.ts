import { createInterface } from 'node:readline';

import { ReuseUnavailableError, StorageUnavailableError, type InputLineErrorCode } from '../errors.js';
import { ERRORS_FILE } from '../output/layout.js';
import type { PreviousOutput } from './previous-output.js';
import { compareWith, equalBytes, lowerBound, selectPositions, sortByBytes } from './byte-keys.js';
import { idKey, ID_BYTES } from './previous-index.js';

/**
 * The ids of a previous output's `_errors.jsonl` whose line the provider refused (CONTENT_REJECTED,
 * PROVIDER_REJECTED, REQUEST_INVALID): that run had no row for them and listed them in neither delta
 * file, so a store that applied it still holds their older vector. For the delta they are ids of
 * the previous output as much as its rows' ids are: one gone now goes in `deletes.jsonl`.
 *
 * Records of lines refused while reading the corpus (INVALID_JSON, TEXT_TOO_LONG, …) are left
 * out: such a line never had its id classified, so that run already listed the id in its deletes
 * when the run before had it, and a store holds no vector for it.
 *
 * Held as the PreviousIndex holds row ids: 128-bit hashes in one typed array, sorted, plus a
 * seen flag each (about 25 bytes an error record). The id strings are read again from the file
 * when the deletes are written, as the rows' ids are read again from their shards.
 */

/** Codes a split gives a line before its id is classified (never sent to the provider). */
const INPUT_CODES: Record<InputLineErrorCode, true> = { INVALID_UTF8: true, INVALID_JSON: true, MISSING_TEXT_FIELD: true, TEXT_TOO_LONG: true, INVALID_GZIP: true };

export class PreviousErrorIds {
  private constructor(
    private readonly previous: PreviousOutput,
    /** Which version of `_errors.jsonl` was read: the deletes read that same one again. */
    private readonly version: string,
    private readonly count: number,
    private readonly ids: Uint8Array,
    /** Entries sorted by id hash. */
    private readonly byId: Uint32Array,
    private readonly seen: Uint8Array,
  ) {}

  /** Whether any refused line of the previous run had an id. */
  get hasIds(): boolean {
    return this.count > 0;
  }

  static async build(previous: PreviousOutput): Promise<PreviousErrorIds> {
    let ids = new Uint8Array(1024 * ID_BYTES);
    let count = 0;
    const version = await forEachRejectedId(previous, undefined, (id) => {
      if ((count + 1) * ID_BYTES > ids.length) {
        const grown = new Uint8Array(ids.length * 2);
        grown.set(ids);
        ids = grown;
      }
      ids.set(idKey(id), count * ID_BYTES);
      count += 1;
    });
    ids = ids.slice(0, count * ID_BYTES);
    const byId = sortByBytes(selectPositions(count, () => true), ids, ID_BYTES);
    return new PreviousErrorIds(previous, version, count, ids, byId, new Uint8Array(count));
  }

  /** Whether the previous output refused a line with this id; marks it seen (not deleted). */
  see(id: string): boolean {
    return this.mark(idKey(id)) > 0;
  }

  /**
   * The ids never seen, in `_errors.jsonl` order, once each, read again from the same version of
   * the file (ReuseUnavailableError when it was replaced meanwhile). `skip`: ids the caller lists
   * from elsewhere (an id that also has a row there goes with the rows).
   */
  async unseen(skip: (id: string) => boolean, emit: (id: string) => void): Promise<void> {
    if (this.count === 0) return;
    await forEachRejectedId(this.previous, this.version, (id) => {
      const key = idKey(id);
      const at = this.first(key);
      if (at === -1 || this.seen[this.byId[at]!] === 1) return;
      // Marked, so a second record of the same id is not listed twice.
      this.mark(key);
      if (!skip(id)) emit(id);
    });
  }

  /** Marks every entry with this key seen; returns how many there are. */
  private mark(key: Uint8Array): number {
    let at = this.first(key);
    if (at === -1) return 0;
    const start = at;
    for (; at < this.byId.length && equalBytes(this.ids, this.byId[at]!, key, ID_BYTES); at++) this.seen[this.byId[at]!] = 1;
    return at - start;
  }

  /** Index in byId of the first entry with this key, or -1. */
  private first(key: Uint8Array): number {
    const at = lowerBound(this.byId, (p) => compareWith(this.ids, p, key, ID_BYTES));
    return at < this.byId.length && equalBytes(this.ids, this.byId[at]!, key, ID_BYTES) ? at : -1;
  }
}

/**
 * Streams the previous output's `_errors.jsonl` and calls `each` with the id of every record the
 * provider refused (see INPUT_CODES). Returns the file's version; with `expected`, a file of
 * another version is a ReuseUnavailableError. Records without `id` (no `--id-field`, a line
 * without one, or written before records had ids) are passed over.
 *
 * The file must hold as many records as the manifest's `counts.failed` (one record per failed
 * line, refused on reading or by the provider): a file cut at a line boundary or emptied parses
 * fine, and the ids it lost would never be deleted. Manifests without that count are trusted.
 */
async function forEachRejectedId(previous: PreviousOutput, expected: string | undefined, each: (id: string) => void): Promise<string> {
  const { store, prefix, location } = previous;
  const where = `${location.endsWith('/') ? location : `${location}/`}${ERRORS_FILE}`;
  let opened;
  try {
    opened = await store.open(prefix + ERRORS_FILE);
  } catch (error) {
    if (error instanceof StorageUnavailableError) throw error;
    throw new ReuseUnavailableError(`${where}: unreadable: ${(error as Error).message}`, { cause: error });
  }
  if (expected !== undefined && opened.version !== expected) {
    opened.body.destroy();
    throw new ReuseUnavailableError(`${where} was replaced while this job read the previous output`);
  }
  const lines = createInterface({ input: opened.body, crlfDelay: Infinity });
  let number = 0;
  let records = 0;
  try {
    for await (const line of lines) {
      number += 1;
      if (line.trim() === '') continue;
      records += 1;
      let record: { id?: unknown; code?: unknown };
      try {
        record = JSON.parse(line) as { id?: unknown; code?: unknown };
      } catch (error) {
        throw new ReuseUnavailableError(`${where}:${number}: not valid JSON (${(error as Error).message})`, { cause: error });
      }
      if (typeof record.id !== 'string' || typeof record.code !== 'string' || Object.hasOwn(INPUT_CODES, record.code)) continue;
      each(record.id);
    }
  } catch (error) {
    if (error instanceof ReuseUnavailableError || error instanceof StorageUnavailableError) throw error;
    throw new ReuseUnavailableError(`${where}: unreadable: ${(error as Error).message}`, { cause: error });
  } finally {
    lines.close();
    opened.body.destroy();
  }
  const failed = previous.manifest.counts?.failed;
  if (failed !== undefined && records !== failed) {
    throw new ReuseUnavailableError(`${where}: ${records} error records, but the manifest counts ${failed} failed lines; the file was cut short or replaced`);
  }
  return opened.version;
}
