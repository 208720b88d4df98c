import { CURRENT_LUA, REDIS_NOW_LUA } from './corpus-keys.js';
import { DROP_BUFFERS_LUA, STALE_OPEN_BUFFERS } from './open-buffers.js';
import { ENDING_LEASE_MS, ENDING_PREFIX } from './output-lease.js';

/** The Lua scripts of job-record.ts: every state change of a job record is one of these. */

// KEYS: job, open, active jobs, the n open buffers, then the lease if the job has one. ARGV: new state,
// allowed-from (comma list), error, errorCode, time field (set to Redis's now), n, generation
// ('' = any), job id, then the n open shard numbers. Returns 1 if changed, 0 if not, 2 if changed
// with shards still open that the caller did not list (OpenBuffers.dropLeftovers drops them), 3 if
// a cancel met a finalize in progress (CLAIM_FINALIZE).
export const TRANSITION = `${CURRENT_LUA}${REDIS_NOW_LUA}${DROP_BUFFERS_LUA}
local n = tonumber(ARGV[6])
local lease = KEYS[4 + n]
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 0 end
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
if ARGV[7] ~= '' and generation ~= tonumber(ARGV[7]) then return 0 end
local allowed = false
for st in string.gmatch(ARGV[2], '[^,]+') do if st == s then allowed = true end end
if not allowed then return 0 end
local finalizing = redis.call('HGET', KEYS[1], 'finalizing')
if ARGV[1] == 'cancelled' and finalizing and tonumber(finalizing) == generation then return 3 end
local ending = ARGV[1] == 'completed' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled'
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ending then
  redis.call('HDEL', KEYS[1], 'finalizing')
  redis.call('ZREM', KEYS[3], ARGV[8])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3], 'errorCode', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], now_ms()) end
if ending and lease and redis.call('GET', lease) == ARGV[8] then
  -- The output is free for the next job; after a stop, once its steps still writing are done
  -- (output-lease.ts: ENDING_LEASE_MS).
  if ARGV[1] == 'completed' then redis.call('DEL', lease)
  else redis.call('SET', lease, '${ENDING_PREFIX}' .. ARGV[8], 'PX', ${ENDING_LEASE_MS}) end
end
if ending then
  -- Buffers of shards still open are of no use to a job that failed or was cancelled.
  if ARGV[1] ~= 'completed' and drop_buffers(KEYS[2], 4, n, 9) > 0 then return 2 end
end
return 1
`;

// KEYS: job, open, shards (written), active jobs, the n open buffers, then the lease and the
// output's last taker if any. ARGV: job id, n, the n open shard numbers, then m and m written shards whose files
// are gone from the output. Returns {generation} or {0, reason, holder}.
export const RESTART = `${DROP_BUFFERS_LUA}
local n = tonumber(ARGV[2])
local lease = KEYS[5 + n]
local taken = KEYS[6 + n]
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return {0, 'missing', ''} end
if s ~= 'failed' and s ~= 'cancelled' then return {0, s, ''} end
local holder = lease and redis.call('GET', lease)
if holder and holder ~= ARGV[1] and holder ~= '${ENDING_PREFIX}' .. ARGV[1] then return {0, 'leased', holder} end
-- A job that took the output since this one stopped cleared it, or wrote shards of its own there:
-- resumed, this job would complete over a mix of both runs' files.
local taker = taken and redis.call('GET', taken)
if taker and taker ~= ARGV[1] then return {0, 'taken', taker} end
-- The new generation's buffers use the same keys: none of the old may survive.
if drop_buffers(KEYS[2], 5, n, 3) > 0 then return {0, '${STALE_OPEN_BUFFERS}', ''} end
if lease then redis.call('SET', lease, ARGV[1]) end
if taken then redis.call('SET', taken, ARGV[1]) end
-- Written shards whose files went while the job stood stopped (a cleanup between cancel and retry)
-- leave the ledger: the new run writes them again, and the counters below leave them out.
local m = tonumber(ARGV[3 + n] or '0')
for i = 1, m do redis.call('HDEL', KEYS[3], ARGV[3 + n + i]) end
-- Counters rebuilt from the written shards: the new run counts every other line exactly once.
local c = {batches = 0, rows = 0, errors = 0, blank = 0, truncated = 0, tokens = 0, n = 0, reused = 0, new = 0, changed = 0, unchanged = 0}
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local st = cjson.decode(v)
  c.batches = c.batches + st.batches
  c.rows = c.rows + st.rows
  c.errors = c.errors + st.errors
  c.blank = c.blank + st.blank
  c.truncated = c.truncated + st.truncated
  c.tokens = c.tokens + st.tokens
  c.reused = c.reused + (st.reused or 0)
  c.new = c.new + (st.new or 0)
  c.changed = c.changed + (st.changed or 0)
  c.unchanged = c.unchanged + (st.unchanged or 0)
  c.n = c.n + 1
end
-- The time the ended generation ran counts toward the job's average, the time it stood stopped does not.
local ran = redis.call('HMGET', KEYS[1], 'finishedAt', 'resumedAt', 'startedAt', 'generation')
local ranFrom = ran[2] or (ran[4] == '0' and ran[3])
if ran[1] and ranFrom then redis.call('HINCRBY', KEYS[1], 'activeMs', math.max(0, tonumber(ran[1]) - tonumber(ranFrom))) end
-- The lines it processed that the rebuilt counters leave out (its open shards, and written shards
-- whose files went) were processed in that time: the average counts them, or a retried job's
-- average fell to a few lines a second while it ran at its usual rate.
local before = redis.call('HMGET', KEYS[1], 'rowsEmbedded', 'rowsFailed', 'rowsBlank')
local redone = (tonumber(before[1]) or 0) + (tonumber(before[2]) or 0) + (tonumber(before[3]) or 0) - (c.rows + c.errors + c.blank)
if redone > 0 then redis.call('HINCRBY', KEYS[1], 'linesRedone', redone) end
-- A job that failed because its previous output changed under it must not build on that output
-- again: the retry would index the changed rows and write a delta mixing two bases. Recorded as
-- the reason reuse is unavailable, the retry embeds the rest (workers/split-reuse.ts).
local failure = redis.call('HMGET', KEYS[1], 'errorCode', 'error', 'reuseError')
if failure[1] == 'REUSE_UNAVAILABLE' and not failure[3] then redis.call('HSET', KEYS[1], 'reuseError', failure[2]) end
redis.call('HDEL', KEYS[1], 'error', 'errorCode', 'finishedAt', 'totalLines', 'totalShards', 'rejectStreak', 'rowsDeleted', 'lastRetry', 'lastRetryAt', 'finalizing', 'resumedAt')
redis.call('ZADD', KEYS[4], tonumber(redis.call('HGET', KEYS[1], 'createdAt') or '0'), ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'batchesTotal', c.batches, 'batchesDone', c.batches,
  'rowsEmbedded', c.rows, 'rowsFailed', c.errors, 'rowsBlank', c.blank, 'rowsTruncated', c.truncated,
  'tokens', c.tokens, 'shardsWritten', c.n, 'rowsReused', c.reused, 'rowsNew', c.new, 'rowsChanged', c.changed,
  'rowsUnchanged', c.unchanged)
return {redis.call('HINCRBY', KEYS[1], 'generation', 1)}
`;

// KEYS: job. ARGV: generation. Queued → running (startedAt set once, resumedAt in every
// generation, on Redis's clock). Returns 1 if running now.
export const START = `${CURRENT_LUA}${REDIS_NOW_LUA}
if not current(KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'state', 'running', 'resumedAt', now)
  redis.call('HSETNX', KEYS[1], 'startedAt', now)
end
return 1
`;

// KEYS: job. ARGV: generation. Finalize of a running job starts writing its output: until it
// ends (completed, failed) or gives the claim back (RELEASE_FINALIZE), a cancel is refused, so the
// job keeps its output lease while `_SUCCESS` is being written. Returns 1 if claimed.
export const CLAIM_FINALIZE = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'finalizing', ARGV[1])
return 1
`;

// KEYS: job. ARGV: generation. A finalize attempt that failed: the job may be cancelled again.
export const RELEASE_FINALIZE = `
if redis.call('HGET', KEYS[1], 'finalizing') == ARGV[1] then redis.call('HDEL', KEYS[1], 'finalizing') end
`;

// KEYS: job. ARGV: generation, totalLines, totalShards. Returns {shardsWritten, totalShards} or {-1, -1}.
export const FINISH_SPLIT = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return {-1, -1} end
redis.call('HSET', KEYS[1], 'totalLines', ARGV[2], 'totalShards', ARGV[3], 'linesRead', ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 'shardsWritten') or '0'), tonumber(ARGV[3])}
`;

// KEYS: job. ARGV: generation, linesRead. Only raises it: a split that starts again (same
// generation, or a retry's) reads from the first line, skipping written shards, and "read" must
// not fall below what was embedded meanwhile.
export const SET_LINES_READ = `${CURRENT_LUA}
if current(KEYS[1], ARGV[1]) and tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'linesRead') or '0') then
  redis.call('HSET', KEYS[1], 'linesRead', ARGV[2])
end
`;

// KEYS: job. ARGV: generation, field, value[, field, value…]. Sets the fields while the generation is current.
export const SET_FIELDS = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
`;

// KEYS: job, written shards, pins, object ends, shard starts, open, jobs index, active jobs, the n
// open buffers, then the output's last taker if the job had a lease. ARGV: job id, cutoff (ms), n.
// Removes a job that ended before the cutoff (or whose record is gone), with every key of it left
// after its end: a job whose record Redis lost left its shard buffers (~60 MB each at the
// defaults) for good. Returns 1 if removed.
export const PRUNE = `
local h = redis.call('HMGET', KEYS[1], 'state', 'finishedAt')
if h[1] then
  if h[1] ~= 'completed' and h[1] ~= 'failed' and h[1] ~= 'cancelled' then return 0 end
  if tonumber(h[2] or '0') >= tonumber(ARGV[2]) then return 0 end
end
local n = tonumber(ARGV[3])
for i = 0, n - 1 do redis.call('DEL', KEYS[9 + i]) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
-- The output's last taker, if it is this job, goes with its record.
local taken = KEYS[9 + n]
if taken and redis.call('GET', taken) == ARGV[1] then redis.call('DEL', taken) end
return 1
`;
