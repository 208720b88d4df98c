import { hash } from 'node:crypto';

import { ReuseUnavailableError, StorageUnavailableError } from '../errors.js';
import type { PreviousOutput } from './previous-output.js';
import { compareWith, decodeHex, equalBytes, lowerBound, selectPositions, sortByBytes } from './byte-keys.js';
import { scanShardColumns } from './shard-columns.js';

/**
 * A memory-bounded index of a previous output, built from its shards' `source`, `line`, `id` and
 * `content_hash` columns (nothing else is read). Everything per row lives in typed arrays, about
 * 47 bytes a row (47 MB for 1,000,000 rows), never in a JS Map of strings: a row is known by its
 * POSITION, its place in the previous output's manifest order (shard by shard, row order within).
 *
 * Lookups: by position first (same source, line and content hash: the common case of an
 * unchanged line), then by content hash (a line that moved). Ids (with `--id-field`) are kept as
 * 128-bit hashes for the delta (new, changed, unchanged) and a seen-set gives the deletes.
 */
/**
 * The index keeps the first 128 bits of each 256-bit content key and of each id's SHA-256: the
 * chance that any two of a billion rows share one is about 10^-21, and it halves the index.
 */
const HASH_BYTES = 16;
export const ID_BYTES = 16;
const HEX_HASH = /^[0-9a-f]{64}$/;

export class PreviousIndex {
  private constructor(
    readonly previous: PreviousOutput,
    /** Number of rows (positions). */
    readonly size: number,
    /** First position of each shard, plus `size` at the end. */
    private readonly shardStarts: Float64Array,
    private readonly sources: Map<string, number>,
    private readonly sourceOf: Uint32Array,
    private readonly lineOf: Uint32Array,
    private readonly hashes: Uint8Array,
    private readonly hasHash: Uint8Array,
    private readonly ids: Uint8Array,
    private readonly hasId: Uint8Array,
    /** Positions sorted by (source, line); null when manifest order already is (the usual case). */
    private readonly byPosition: Uint32Array | null,
    /** Positions with a hash, sorted by hash. */
    private readonly byHash: Uint32Array,
    /** Positions with an id, sorted by id hash. */
    private readonly byId: Uint32Array,
    private readonly seen: Uint8Array,
  ) {}

  /** Reads the index columns of every shard, one shard at a time. */
  static async build(previous: PreviousOutput): Promise<PreviousIndex> {
    const { manifest, store, prefix } = previous;
    const size = manifest.shards.reduce((sum, shard) => sum + shard.rows, 0);
    const shardStarts = new Float64Array(manifest.shards.length + 1);
    const sources = new Map<string, number>();
    const sourceOf = new Uint32Array(size);
    const lineOf = new Uint32Array(size);
    const hashes = new Uint8Array(size * HASH_BYTES);
    const hasHash = new Uint8Array(size);
    // Allocated at the first id: outputs without `--id-field` need none.
    let ids = new Uint8Array(0);
    const hasId = new Uint8Array(size);
    let position = 0;
    for (const [index, shard] of manifest.shards.entries()) {
      shardStarts[index] = position;
      const base = position;
      // Each column chunk is folded straight into the typed arrays: no shard's strings are kept.
      const fold = (column: string, rowStart: number, values: ArrayLike<unknown>): void => {
        if (rowStart + values.length > shard.rows) throw new Error(`more rows than the manifest's ${shard.rows}`);
        for (let i = 0; i < values.length; i++) {
          const at = base + rowStart + i;
          const value = values[i];
          if (column === 'source') {
            const name = String(value);
            let sourceIndex = sources.get(name);
            if (sourceIndex === undefined) sources.set(name, (sourceIndex = sources.size));
            sourceOf[at] = sourceIndex;
          } else if (column === 'line') {
            const line = Number(value);
            if (!(line >= 0 && line <= 0xffff_ffff)) throw new Error(`line ${String(value)} out of range`);
            lineOf[at] = line;
          } else if (column === 'content_hash') {
            if (typeof value === 'string' && HEX_HASH.test(value)) {
              decodeHex(value, hashes, at * HASH_BYTES, HASH_BYTES);
              hasHash[at] = 1;
            }
          } else if (value !== null && value !== undefined) {
            if (ids.length === 0) ids = new Uint8Array(size * ID_BYTES);
            ids.set(idKey(String(value)), at * ID_BYTES);
            hasId[at] = 1;
          }
        }
      };
      let rows;
      try {
        rows = await scanShardColumns(store, prefix + shard.file, manifest.output_format, ['source', 'line', 'id', 'content_hash'], fold);
      } catch (error) {
        if (error instanceof StorageUnavailableError) throw error;
        throw new ReuseUnavailableError(`${previous.location}: shard ${shard.file} unreadable: ${(error as Error).message}`, { cause: error });
      }
      if (rows !== shard.rows) {
        throw new ReuseUnavailableError(`${previous.location}: shard ${shard.file} has ${rows} rows, the manifest says ${shard.rows}`);
      }
      position += rows;
    }
    let ordered = true;
    for (let p = 1; p < size && ordered; p++) ordered = comparePosition(sourceOf, lineOf, p - 1, p) <= 0;
    shardStarts[manifest.shards.length] = position;
    if (size > 0 && !hasHash.includes(1)) {
      throw new ReuseUnavailableError(`${previous.location}: no row has a content_hash (written before content keys existed); embedding everything`);
    }
    const byPosition = ordered ? null : selectPositions(size, () => true).sort((a, b) => comparePosition(sourceOf, lineOf, a, b));
    const byHash = sortByBytes(selectPositions(size, (p) => hasHash[p] === 1), hashes, HASH_BYTES);
    const byId = sortByBytes(selectPositions(size, (p) => hasId[p] === 1), ids, ID_BYTES);
    return new PreviousIndex(previous, size, shardStarts, sources, sourceOf, lineOf, hashes, hasHash, ids, hasId, byPosition, byHash, byId, new Uint8Array(size));
  }

  /**
   * The position of a previous row whose vectors fit this line: the row at the same source and
   * line if its content hash matches, else any row with that hash, else -1.
   */
  match(source: string, line: number, hash: Uint8Array): number {
    const sourceIndex = this.sources.get(source);
    if (sourceIndex !== undefined) {
      const at = this.findPosition(sourceIndex, line);
      if (at !== -1 && this.hasHash[at] === 1 && equalBytes(this.hashes, at, hash, HASH_BYTES)) return at;
    }
    return this.findHash(hash);
  }

  /** Any position with this content hash, or -1. */
  findHash(hash: Uint8Array): number {
    const at = lowerBound(this.byHash, (p) => compareWith(this.hashes, p, hash, HASH_BYTES));
    return at < this.byHash.length && equalBytes(this.hashes, this.byHash[at]!, hash, HASH_BYTES) ? this.byHash[at]! : -1;
  }

  /**
   * For the delta: what became of `id`. `new` when the previous output had no such id;
   * `unchanged` when one of its rows has the same content hash; else `changed`. Marks the id
   * seen, so `unseenPositions` ends with the deleted ones.
   */
  classifyId(id: string, hash: Uint8Array): 'new' | 'changed' | 'unchanged' {
    const key = idKey(id);
    let at = lowerBound(this.byId, (p) => compareWith(this.ids, p, key, ID_BYTES));
    let found: 'new' | 'changed' | 'unchanged' = 'new';
    for (; at < this.byId.length && equalBytes(this.ids, this.byId[at]!, key, ID_BYTES); at++) {
      const position = this.byId[at]!;
      this.seen[position] = 1;
      if (found !== 'unchanged') found = this.hasHash[position] === 1 && equalBytes(this.hashes, position, hash, HASH_BYTES) ? 'unchanged' : 'changed';
    }
    return found;
  }

  /** Whether a row of the previous output has this id. */
  hasRowWithId(id: string): boolean {
    const key = idKey(id);
    const at = lowerBound(this.byId, (p) => compareWith(this.ids, p, key, ID_BYTES));
    return at < this.byId.length && equalBytes(this.ids, this.byId[at]!, key, ID_BYTES);
  }

  /** Whether any row has an id. */
  get hasIds(): boolean {
    return this.byId.length > 0;
  }

  /**
   * The deletes: per id of the previous output never classified, its first position, in manifest
   * order. One per id: an id on two previous rows was written to `deletes.jsonl` twice.
   */
  *unseenIdPositions(): Generator<number> {
    const firsts: number[] = [];
    // byId runs each id's positions together, in position order; classifyId marks a whole run seen.
    for (let i = 0; i < this.byId.length; i++) {
      const position = this.byId[i]!;
      const sameIdAsBefore = i > 0 && equalBytes(this.ids, this.byId[i - 1]!, this.ids.subarray(position * ID_BYTES, (position + 1) * ID_BYTES), ID_BYTES);
      if (this.seen[position] === 0 && !sameIdAsBefore) firsts.push(position);
    }
    yield* firsts.sort((a, b) => a - b);
  }

  /** Which shard of the manifest holds a position, and at which row of that shard file. */
  locate(position: number): { shard: number; file: string; rowInShard: number } {
    if (!(position >= 0 && position < this.size)) throw new RangeError(`position ${position} outside 0..${this.size - 1}`);
    let low = 0;
    let high = this.shardStarts.length - 2;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.shardStarts[middle]! <= position) low = middle;
      else high = middle - 1;
    }
    return { shard: low, file: this.previous.manifest.shards[low]!.file, rowInShard: position - this.shardStarts[low]! };
  }

  private findPosition(sourceIndex: number, line: number): number {
    const order = this.byPosition;
    const at = (i: number): number => (order ? order[i]! : i);
    let low = 0;
    let high = this.size;
    while (low < high) {
      const middle = (low + high) >> 1;
      const p = at(middle);
      if (this.sourceOf[p]! < sourceIndex || (this.sourceOf[p] === sourceIndex && this.lineOf[p]! < line)) low = middle + 1;
      else high = middle;
    }
    if (low >= this.size) return -1;
    const p = at(low);
    return this.sourceOf[p] === sourceIndex && this.lineOf[p] === line ? p : -1;
  }
}

/** 128 bits of SHA-256 of an id: collisions are out of reach for any corpus (2^-64 at 4 billion ids). */
export function idKey(id: string): Buffer {
  // One-shot hash (Node ≥ 20.12): no Hash object per id while a million are indexed.
  return hash('sha256', id, 'buffer').subarray(0, ID_BYTES);
}

function comparePosition(sourceOf: Uint32Array, lineOf: Uint32Array, a: number, b: number): number {
  return sourceOf[a]! - sourceOf[b]! || lineOf[a]! - lineOf[b]!;
}
