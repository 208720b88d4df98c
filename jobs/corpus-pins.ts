import { createHash } from 'node:crypto';

import type { CorpusObject } from '../src/corpus/list-corpus.js';
import { InputChangedError } from '../src/errors.js';
import { defineLuaScript, type LuaScript } from '../src/redis/lua-script.js';
import type { RedisClient } from '../src/redis/redis-client.js';
import type { CorpusKeys } from './corpus-keys.js';

/** What every INPUT_CHANGED message ends with: why the job cannot go on, and what to do. */
const RESUBMIT = 'The shards already written hold the corpus as it was; submit the job again (into a new output, or with --overwrite)';

/** Hex digits of one object's pin. */
const PIN_LENGTH = 16;

/** An object's pin: its key and version, hashed. */
function pinOf(key: string, version: string): string {
  return createHash('sha256').update(`${key}\0${version}`).digest('hex').slice(0, PIN_LENGTH);
}

function rewritten(id: string, source: string): InputChangedError {
  return new InputChangedError(`${source} is not the object job ${id} read there before: it was rewritten, or objects before it were added or removed. ` + RESUBMIT);
}

function gone(id: string, input: string, missing: number, pinned: number): InputChangedError {
  return new InputChangedError(`${input}: ${missing} of the ${pinned} objects job ${id} read before are gone. ` + RESUBMIT);
}

// Records object ARGV[1]'s end (ARGV[2]) in the ends list KEYS[1], once and in order.
const RECORD_END_LUA = `
local function record_end(ends, index, row)
  if row ~= '' and redis.call('LLEN', ends) == tonumber(index) then redis.call('RPUSH', ends, row) end
end
`;

// KEYS: pins, ends. ARGV: the object's index in the corpus, its pin, its first row ('' = unknown).
// Returns 1 when the pin is the one recorded (or is recorded now, as the next one), 0 when another
// was recorded there. An object is opened only once the one before it was read to its end, so its
// first row is that one's end: recorded here, with no call of its own.
const CHECK_PIN = `${RECORD_END_LUA}
local index = tonumber(ARGV[1])
local at = index * ${PIN_LENGTH}
local length = redis.call('STRLEN', KEYS[1])
if at < length then
  if redis.call('GETRANGE', KEYS[1], at, at + ${PIN_LENGTH - 1}) ~= ARGV[2] then return 0 end
elseif at > length then
  return redis.error_reply('object ' .. ARGV[1] .. ' pinned before the ones ahead of it')
else
  redis.call('APPEND', KEYS[1], ARGV[2])
end
if index > 0 then record_end(KEYS[2], index - 1, ARGV[3]) end
return 1
`;

// KEYS: ends. ARGV: the object's index, the row after its last.
const RECORD_END = `${RECORD_END_LUA}
record_end(KEYS[1], ARGV[1], ARGV[2])
`;

/** Where a shard's first row is in the corpus: line `line` of object `object`, at byte `offset`. */
export interface ShardStart {
  object: number;
  offset: number;
  line: number;
}

/**
 * Which version of each corpus object a job read, in corpus order. The split goes through the
 * corpus from the start whenever it starts again (its worker stopped or died, Redis restarted, `embedq
 * retry`) and skips written shards by row number, which is right only if the objects are the ones
 * it read before: the same keys, in the same order, each the same version. Each object is pinned
 * (key and version, hashed) as the split opens it, and checked against its pin when met again.
 * A job's pins live as long as its written shards do (they go at finalize): 16 bytes an object.
 *
 * The row after each object read to its end is recorded too (when the next object is pinned, and
 * for the last one at the corpus's end): a split that starts again need not read an object whose
 * rows are all in written shards, only check its version (as its listing gives it).
 *
 * And where each shard opened inside an object that is not gzipped starts (object, byte offset,
 * line): a split that starts again reads that object from the first unwritten shard's start (a
 * ranged GET) instead of from its first byte. One hash field a shard.
 */
export class CorpusPins {
  private readonly checkScript: LuaScript;
  private readonly recordEndScript: LuaScript;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.checkScript = defineLuaScript(redis, CHECK_PIN);
    this.recordEndScript = defineLuaScript(redis, RECORD_END);
  }

  /**
   * Pins object `index` of job `id` the first time it is opened; after that, checks it is the
   * same key and version. Throws InputChangedError naming `source` when it is not. `startRow`:
   * the object's first row, which is where the object before it ended.
   */
  async check(id: string, index: number, object: { key: string; source: string }, version: string, startRow?: number): Promise<void> {
    if ((await this.checkScript([this.keys.pins(id), this.keys.objectEnds(id)], index, pinOf(object.key, version), startRow ?? '')) === 1) return;
    throw rewritten(id, object.source);
  }

  /**
   * `embedq retry`, before it restarts the job: the error its split would meet, if the corpus as
   * listed now (`objects`, in order) is not the one job `id` read. Only the objects it had read are
   * compared, so the listing stops there. A job that failed INPUT_CHANGED, retried over a corpus
   * still changed, was accepted and failed again as soon as its split ran.
   */
  async changedSince(id: string, input: string, objects: AsyncIterable<CorpusObject>): Promise<InputChangedError | undefined> {
    const pins = (await this.redis.get(this.keys.pins(id))) ?? '';
    const pinned = pins.length / PIN_LENGTH;
    if (pinned === 0) return undefined;
    let index = 0;
    for await (const object of objects) {
      const version = object.version ?? (await object.store.stat(object.key))?.version;
      if (version === undefined || pinOf(object.key, version) !== pins.slice(index * PIN_LENGTH, (index + 1) * PIN_LENGTH)) return rewritten(id, object.source);
      index += 1;
      if (index === pinned) return undefined;
    }
    return gone(id, input, pinned - index, pinned);
  }

  /**
   * At the end of the corpus (`objects` read in this pass): throws InputChangedError if objects
   * read before are gone.
   */
  async checkCount(id: string, input: string, objects: number): Promise<void> {
    const pinned = (await this.redis.strlen(this.keys.pins(id))) / PIN_LENGTH;
    if (pinned > objects) throw gone(id, input, pinned - objects, pinned);
  }

  /** The last object, `index`, was read to its end: `endRow` is the row after its last. */
  async recordEnd(id: string, index: number, endRow: number): Promise<void> {
    await this.recordEndScript([this.keys.objectEnds(id)], index, endRow);
  }

  /** The row after each object read to its end, in corpus order. */
  async ends(id: string): Promise<number[]> {
    return (await this.redis.lrange(this.keys.objectEnds(id), 0, -1)).map(Number);
  }

  /** Shard `shard` starts at `start` (the first time it is split; the corpus is pinned, so it stays true). */
  async recordShardStart(id: string, shard: number, start: ShardStart): Promise<void> {
    await this.redis.hsetnx(this.keys.shardStarts(id), String(shard), `${start.object}:${start.offset}:${start.line}`);
  }

  /** Where shard `shard` starts, if it was recorded. */
  async shardStart(id: string, shard: number): Promise<ShardStart | undefined> {
    const value = await this.redis.hget(this.keys.shardStarts(id), String(shard));
    if (!value) return undefined;
    const [object, offset, line] = value.split(':').map(Number) as [number, number, number];
    return { object, offset, line };
  }

  /** After finalize: the output is complete and no split will run again. */
  async drop(id: string): Promise<void> {
    await this.redis.del(this.keys.pins(id), this.keys.objectEnds(id), this.keys.shardStarts(id));
  }
}
