import { createHash } from 'node:crypto';

import { InputChangedError } from '../src/errors.js';
import { defineLuaScript, type LuaScript } from '../src/redis/lua-script.js';
import type { RedisClient } from '../src/redis/redis-client.js';
import type { CorpusKeys } from './corpus-keys.js';

/** What every INPUT_CHANGED message ends with: why the job cannot go on, and what to do. */
const RESUBMIT = 'The shards already written hold the corpus as it was; submit the job again (into a new output, or with --overwrite)';

/** Hex digits of one object's pin. */
const PIN_LENGTH = 16;

// KEYS: pins. ARGV: the object's index in the corpus, its pin. Returns 1 when the pin is the one
// recorded (or is recorded now, as the next one), 0 when another was recorded there.
const CHECK_PIN = `
local at = tonumber(ARGV[1]) * ${PIN_LENGTH}
local length = redis.call('STRLEN', KEYS[1])
if at < length then
  if redis.call('GETRANGE', KEYS[1], at, at + ${PIN_LENGTH - 1}) == ARGV[2] then return 1 end
  return 0
end
if at > length then return redis.error_reply('object ' .. ARGV[1] .. ' pinned before the ones ahead of it') end
redis.call('APPEND', KEYS[1], ARGV[2])
return 1
`;

// KEYS: ends. ARGV: the object's index, the row after its last. Recorded once, in order.
const RECORD_END = `
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then redis.call('RPUSH', KEYS[1], ARGV[2]) end
`;

/**
 * Which version of each corpus object a job read, in corpus order. The split goes through the
 * corpus from the start whenever it starts again (its worker stopped or died, Redis restarted, `embedq
 * retry`) and skips written shards by row number, which is right only if the objects are the ones
 * it read before: the same keys, in the same order, each the same version. Each object is pinned
 * (key and version, hashed) as the split opens it, and checked against its pin when met again.
 * A job's pins live as long as its written shards do (they go at finalize): 16 bytes an object.
 *
 * Each object read to its end also records the row after its last: a split that starts again
 * need not read an object whose rows are all in written shards, only check its version (as its
 * listing gives it).
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
   * same key and version. Throws InputChangedError naming `source` when it is not.
   */
  async check(id: string, index: number, object: { key: string; source: string }, version: string): Promise<void> {
    const pin = createHash('sha256').update(`${object.key}\0${version}`).digest('hex').slice(0, PIN_LENGTH);
    if ((await this.checkScript([this.keys.pins(id)], index, pin)) === 1) return;
    throw new InputChangedError(
      `${object.source} is not the object job ${id} read there before: it was rewritten, or objects before it were added or removed. ` + RESUBMIT,
    );
  }

  /**
   * At the end of the corpus (`objects` read in this pass): throws InputChangedError if objects
   * read before are gone.
   */
  async checkCount(id: string, input: string, objects: number): Promise<void> {
    const pinned = (await this.redis.strlen(this.keys.pins(id))) / PIN_LENGTH;
    if (pinned <= objects) return;
    throw new InputChangedError(
      `${input}: ${pinned - objects} of the ${pinned} objects job ${id} read before are gone. ` + RESUBMIT,
    );
  }

  /** Object `index` was read to its end: `endRow` is the row after its last. */
  async recordEnd(id: string, index: number, endRow: number): Promise<void> {
    await this.recordEndScript([this.keys.objectEnds(id)], index, endRow);
  }

  /** The row after each object read to its end, in corpus order. */
  async ends(id: string): Promise<number[]> {
    return (await this.redis.lrange(this.keys.objectEnds(id), 0, -1)).map(Number);
  }

  /** After finalize: the output is complete and no split will run again. */
  async drop(id: string): Promise<void> {
    await this.redis.del(this.keys.pins(id), this.keys.objectEnds(id));
  }
}
