import type { RedisClient } from '../src/redis/redis-client.js';

import { defineLuaScript } from '../src/redis/lua-script.js';
import { CURRENT_LUA, LOST_STATE_LUA, type CorpusKeys } from './corpus-keys.js';
import { JobStateLostError } from './job-errors.js';

/**
 * Which shards of a job are written out, with their stats. A shard is recorded once, only by the
 * job's current generation while it runs, and only when its buffer holds every batch the splitter
 * queued (`done == expected`); then its buffer is freed.
 */

export interface ShardStats {
  shard: number;
  file: string;
  firstRow: number;
  lastRow: number;
  rows: number;
  bytes: number;
  errors: number;
  /** Temporary key of the shard's error records, merged into `_errors.jsonl` by finalize. */
  errorsKey: string | null;
  /** The shard's share of the job's counters, so a restarted job can rebuild them from written shards. */
  blank: number;
  truncated: number;
  tokens: number;
  batches: number;
  /** `--reuse`: rows whose vectors came from the previous output; with `--id-field`, ids new, changed, unchanged. */
  reused?: number;
  new?: number;
  changed?: number;
  unchanged?: number;
  /** `--reuse --id-field`: the shard's `_delta/upserts-NNNNN.parquet`, when it has rows new or changed. */
  upsertsFile?: string;
}

/** `recorded` (now or before); `refused`: stopped, newer generation, or the buffer is incomplete. */
export type MarkWrittenResult =
  | { status: 'recorded'; shardsWritten: number; totalShards: number | null }
  | { status: 'refused'; reason: 'inactive' | 'incomplete' };

// KEYS: job, shard, written, open. ARGV: generation, shard, stats JSON.
// Returns {'recorded', shardsWritten, totalShards or -1}, {'inactive'|'incomplete'} or {'lost-ledger'|'lost-buffer'}
const MARK_WRITTEN = `${CURRENT_LUA}${LOST_STATE_LUA}
if not current(KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {'inactive'} end
if ledger_lost(KEYS[1], KEYS[3]) then return {'lost-ledger'} end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
  if buffer_lost(KEYS[4], KEYS[2], ARGV[2]) then return {'lost-buffer'} end
  local expected = redis.call('HGET', KEYS[2], 'expected')
  if not expected or tonumber(expected) ~= tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return {'incomplete'} end
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'shardsWritten', 1)
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], ARGV[2])
return {'recorded', tonumber(redis.call('HGET', KEYS[1], 'shardsWritten') or '0'), tonumber(redis.call('HGET', KEYS[1], 'totalShards') or '-1')}
`;

// KEYS: job, written. ARGV: generation, shard numbers. Returns how many were forgotten, or -1 if the
// job does not run in that generation. The ledger and its counter move together (LOST_STATE_LUA).
const FORGET = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return -1 end
local forgotten = 0
for i = 2, #ARGV do forgotten = forgotten + redis.call('HDEL', KEYS[2], ARGV[i]) end
if forgotten > 0 then redis.call('HINCRBY', KEYS[1], 'shardsWritten', -forgotten) end
return forgotten
`;

export class ShardLedger {
  private readonly markWrittenScript;
  private readonly forgetScript;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.markWrittenScript = defineLuaScript(redis, MARK_WRITTEN);
    this.forgetScript = defineLuaScript(redis, FORGET);
  }

  async isWritten(id: string, shard: number): Promise<boolean> {
    return (await this.redis.hexists(this.keys.writtenShards(id), String(shard))) === 1;
  }

  /** The numbers of the written shards. */
  async writtenShards(id: string): Promise<Set<number>> {
    return new Set((await this.redis.hkeys(this.keys.writtenShards(id))).map(Number));
  }

  async writtenCount(id: string): Promise<number> {
    return this.redis.hlen(this.keys.writtenShards(id));
  }

  /**
   * Records a written shard once and frees its buffer (see the class comment for when it refuses);
   * JobStateLostError when the ledger or the shard's buffer is gone from Redis.
   */
  async markWritten(id: string, generation: number, stats: ShardStats): Promise<MarkWrittenResult> {
    const result = (await this.markWrittenScript(
      [this.keys.job(id), this.keys.shard(id, stats.shard), this.keys.writtenShards(id), this.keys.openShards(id)],
      generation,
      stats.shard,
      JSON.stringify(stats),
    )) as [string, number?, number?];
    if (result[0] === 'lost-ledger') throw new JobStateLostError(id, 'the ledger of written shards');
    if (result[0] === 'lost-buffer') throw new JobStateLostError(id, `shard ${stats.shard}'s buffer`);
    if (result[0] !== 'recorded') return { status: 'refused', reason: result[0] as 'inactive' | 'incomplete' };
    const totalShards = result[2]!;
    return { status: 'recorded', shardsWritten: result[1]!, totalShards: totalShards < 0 ? null : totalShards };
  }

  /**
   * Takes shards out of the ledger, as if never written, while the job runs in `generation`: their
   * files are gone from the output, and a retry's split embeds and writes the shards the ledger
   * does not hold. False if the job no longer runs in that generation.
   */
  async forget(id: string, generation: number, shards: readonly number[]): Promise<boolean> {
    if (shards.length === 0) return true;
    return ((await this.forgetScript([this.keys.job(id), this.keys.writtenShards(id)], generation, ...shards)) as number) >= 0;
  }

  /** Stats of every written shard, in shard order. */
  async stats(id: string): Promise<ShardStats[]> {
    const hash = await this.redis.hgetall(this.keys.writtenShards(id));
    return Object.values(hash)
      .map((value) => JSON.parse(value) as ShardStats)
      .sort((a, b) => a.shard - b.shard);
  }

  /** After finalize: the per-shard stats are in the manifest now. */
  async dropStats(id: string): Promise<void> {
    await this.redis.del(this.keys.writtenShards(id));
  }
}
