import { CURRENT_LUA, LOST_STATE_LUA } from './corpus-keys.js';

/** The Lua scripts of shard-buffer.ts. */

/**
 * When lines the provider rejects without a reason tied to their content come this thick, the
 * cause is systematic (a proxy's 413, a gateway's 400, a wrong setting), not the lines: the job
 * fails instead of "completing" with every row in `_errors.jsonl`.
 */
export const REJECTED_STREAK_LIMIT = 20;
export const REJECTED_SHARD_FRACTION = 0.05;

// KEYS: job, shard, written, open. ARGV: generation, shard, field, blob, errorsJson|'', embedded,
// failed, tokens, rejected (PROVIDER_REJECTED lines of this batch), shard rejected limit.
// Finds a lost buffer; a lost ledger is left to the steps that read or extend it (close, write,
// finalize, the split's wait for room): one command fewer for every batch.
export const STORE_BATCH = `${CURRENT_LUA}${LOST_STATE_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
if buffer_lost(KEYS[4], KEYS[2], ARGV[2]) then return 'lost-buffer' end
redis.call('SADD', KEYS[4], ARGV[2])
local tooMany = false
if redis.call('HSETNX', KEYS[2], 'b:' .. ARGV[3], ARGV[4]) == 1 then
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'e:' .. ARGV[3], ARGV[5]) end
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  redis.call('HINCRBY', KEYS[1], 'batchesDone', 1)
  redis.call('HINCRBY', KEYS[1], 'rowsEmbedded', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[8])
  redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[8])
  local rejected = tonumber(ARGV[9])
  if rejected > 0 then
    local inShard = redis.call('HINCRBY', KEYS[2], 'rejected', rejected)
    local streak = rejected
    if tonumber(ARGV[6]) == 0 then streak = redis.call('HINCRBY', KEYS[1], 'rejectStreak', rejected) else redis.call('HSET', KEYS[1], 'rejectStreak', rejected) end
    if streak >= ${REJECTED_STREAK_LIMIT} or inShard > tonumber(ARGV[10]) then tooMany = true end
  elseif tonumber(ARGV[6]) > 0 then
    redis.call('HSET', KEYS[1], 'rejectStreak', 0)
  end
end
if tooMany then return 'too-many-rejected' end
local expected = redis.call('HGET', KEYS[2], 'expected')
if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

// KEYS: job, shard, written. ARGV: generation, shard, batch field suffix
export const BATCH_STATUS = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
if redis.call('HEXISTS', KEYS[2], 'b:' .. ARGV[3]) == 1 then
  local expected = redis.call('HGET', KEYS[2], 'expected')
  if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
  return 'stored'
end
return 'pending'
`;

// KEYS: job, shard, written, open. ARGV: generation, shard, expected, meta JSON, blank, truncated, input errors,
// reused, new, changed, unchanged (--reuse counts), reuse list ('' for none)
export const CLOSE_SHARD = `${CURRENT_LUA}${LOST_STATE_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if ledger_lost(KEYS[1], KEYS[3]) then return 'lost-ledger' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
if buffer_lost(KEYS[4], KEYS[2], ARGV[2]) then return 'lost-buffer' end
redis.call('SADD', KEYS[4], ARGV[2])
if redis.call('HSETNX', KEYS[2], 'expected', ARGV[3]) == 1 then
  redis.call('HSET', KEYS[2], 'meta', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'batchesTotal', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'rowsBlank', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'rowsTruncated', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[7])
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[2], 'reuse', ARGV[12]) end
  -- Reused rows are embedded rows that cost no request.
  redis.call('HINCRBY', KEYS[1], 'rowsEmbedded', ARGV[8])
  redis.call('HINCRBY', KEYS[1], 'rowsReused', ARGV[8])
  redis.call('HINCRBY', KEYS[1], 'rowsNew', ARGV[9])
  redis.call('HINCRBY', KEYS[1], 'rowsChanged', ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'rowsUnchanged', ARGV[11])
end
if tonumber(ARGV[3]) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

// KEYS: job, shard, written, open. ARGV: generation, shard. For a step that found nothing to do
// where there should be something (no buffer to write, no room coming): is the state whole?
// Returns 'inactive', 'lost-ledger', 'lost-buffer' or 'whole'.
export const CHECK_LOST = `${CURRENT_LUA}${LOST_STATE_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if ledger_lost(KEYS[1], KEYS[3]) then return 'lost-ledger' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 and buffer_lost(KEYS[4], KEYS[2], ARGV[2]) then return 'lost-buffer' end
return 'whole'
`;
