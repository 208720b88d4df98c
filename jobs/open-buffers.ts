import { defineLuaScript } from '../src/redis/lua-script.js';
import type { RedisClient } from '../src/redis/redis-client.js';
import type { CorpusKeys } from './corpus-keys.js';

/**
 * The shard buffers a job has open, as the scripts that drop them (cancel, failure, restart) must
 * name them. Scripts declare every key they touch in KEYS (a Redis Cluster routes by them, and
 * Redis asks it of every script), so the caller reads the job's open set (the index of its
 * buffers: no SCAN) and passes the buffers' keys with their shard numbers. A shard opened in
 * between is reported back; once the job is stopped no shard opens any more (CLOSE_SHARD and
 * STORE_BATCH are fenced), so one more round with a fresh read drops the rest.
 */

/**
 * Lua: deletes the buffers the caller listed (`KEYS[from..from+n-1]`, shard numbers
 * `ARGV[argFrom..]`) and takes them off the open set; returns how many shards are still open.
 */
export const DROP_BUFFERS_LUA = `
local function drop_buffers(openKey, from, n, argFrom)
  for i = 0, n - 1 do
    redis.call('DEL', KEYS[from + i])
    redis.call('SREM', openKey, ARGV[argFrom + i])
  end
  return redis.call('SCARD', openKey)
end
`;

/** Answer of a restart that found shards it was not told about; the caller reads them again. */
export const STALE_OPEN_BUFFERS = 'stale-open-buffers';

/** Rounds of "read the open set, drop those" before giving up (a stopped job needs at most two). */
export const OPEN_BUFFER_ATTEMPTS = 5;

// KEYS: job, open, the n open buffers. ARGV: n, the n open shard numbers. For a stopped job only
// (a restarted one dropped them itself). Returns how many shards are still open.
const DROP_LEFTOVER_BUFFERS = `${DROP_BUFFERS_LUA}
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'queued' or s == 'running' then return 0 end
return drop_buffers(KEYS[2], 3, tonumber(ARGV[1]), 2)
`;

export interface DeclaredBuffers {
  /** Keys of the open buffers, and their shard numbers in the same order. */
  buffers: string[];
  shards: string[];
  /** The job's output lease key, if it holds one (ends and restarts touch it too). */
  lease: string[];
}

export class OpenBuffers {
  private readonly dropLeftoverScript;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.dropLeftoverScript = defineLuaScript(redis, DROP_LEFTOVER_BUFFERS);
  }

  /** The keys a stop or restart script must declare; `withBuffers: false` for one that drops none. */
  async declared(id: string, withBuffers = true): Promise<DeclaredBuffers> {
    const [shards, lease] = await Promise.all([
      withBuffers ? this.redis.smembers(this.keys.openShards(id)) : Promise.resolve([]),
      this.redis.hget(this.keys.job(id), 'lease'),
    ]);
    return { buffers: shards.map((shard) => this.keys.shard(id, Number(shard))), shards, lease: lease ? [lease] : [] };
  }

  /** Drops the buffers of shards opened between reading the open set and stopping the job. */
  async dropLeftovers(id: string): Promise<void> {
    for (let attempt = 0; attempt < OPEN_BUFFER_ATTEMPTS; attempt += 1) {
      const { buffers, shards } = await this.declared(id);
      if ((await this.dropLeftoverScript([this.keys.job(id), this.keys.openShards(id), ...buffers], shards.length, ...shards)) === 0) return;
    }
    throw new Error(`job ${id}: shard buffers kept appearing after it stopped`);
  }
}
