import type { RedisClient } from '../src/redis/redis-client.js';

import type { JobOptions } from '../src/job-options.js';
import { defineLuaScript } from '../src/redis/lua-script.js';
import { redisNow } from '../src/redis/redis-clock.js';
import type { CorpusKeys } from './corpus-keys.js';
import { parseHolder } from './output-lease.js';
import { CLAIM_FINALIZE, FINISH_SPLIT, PRUNE, RELEASE_FINALIZE, RESTART, SET_FIELDS, SET_LINES_READ, START, TRANSITION } from './job-record-scripts.js';
import { OPEN_BUFFER_ATTEMPTS, OpenBuffers, STALE_OPEN_BUFFERS } from './open-buffers.js';

/**
 * A corpus job's record in Redis: options, state, generation, times and counters. Every state
 * change is one Lua script, so it cannot interleave with a step of the pipeline; the end states
 * (completed, failed, cancelled) also give up the job's output lease.
 */

export type CorpusJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export const FINAL_STATES: ReadonlySet<CorpusJobState> = new Set(['completed', 'failed', 'cancelled']);

export interface CorpusJobCounters {
  linesRead: number;
  totalLines: number | null;
  totalShards: number | null;
  batchesTotal: number;
  batchesDone: number;
  rowsEmbedded: number;
  rowsFailed: number;
  rowsBlank: number;
  rowsTruncated: number;
  tokens: number;
  shardsWritten: number;
  /** `--reuse`: rows that took a previous row's vectors (they count as embedded too). */
  rowsReused: number;
  /** `--reuse --id-field`: ids new, changed and unchanged against the previous output, and ids gone. */
  rowsNew: number;
  rowsChanged: number;
  rowsUnchanged: number;
  rowsDeleted: number;
}

/** The previous output a `--reuse` job builds on, as the split first resolved it. */
export interface ReusedFrom {
  location: string;
  jobId: string;
  /** The generation whose split first matched lines against it. */
  generation: number;
}

export interface CorpusJobRecord extends CorpusJobCounters {
  id: string;
  options: JobOptions;
  state: CorpusJobState;
  generation: number;
  createdAt: number;
  startedAt: number | null;
  /** When the current generation started running (a retry's, or the first run's). */
  resumedAt: number | null;
  /** How long the job's ended generations ran (a retried job's time before its last stop). */
  activeMs: number;
  /** Lines the ended generations processed that a retry took out of the counters (to embed again): the average counts them with `activeMs`. */
  linesRedone: number;
  finishedAt: number | null;
  /** Why the job failed or was cancelled. */
  error: string | null;
  errorCode: string | null;
  /** Name of the schedule that submitted it, if any. */
  schedule: string | null;
  reusedFrom: ReusedFrom | null;
  /** Why `--reuse` could not be used (the job then embeds every line). Once set, it stays for the job. */
  reuseError: string | null;
  /**
   * The last failed attempt of one of the job's steps that will be retried (a DashScope outage, a
   * storage hiccup), and when: a running job that makes no progress says why.
   */
  lastRetry: string | null;
  lastRetryAt: number | null;
  /**
   * Every shard is written and finalize is writing `_manifest.json` and `_SUCCESS` (state still
   * running): the job completes within moments and cannot be cancelled meanwhile.
   */
  finishing: boolean;
}

/** Old records read per round of a prune. */
const PRUNE_BATCH = 100;
/**
 * How long one prune goes on (each submit runs one): a submit stays quick however many records
 * there are, and a backlog (a retention lowered under a month of a schedule every minute, ~43,000
 * records) goes over the next submits, ~1,000 a submit.
 */
const PRUNE_BUDGET_MS = 500;

/** Why `restart` refused: the job is gone, not stopped, or its output now belongs to another job. */
export type RestartRefusal =
  | { reason: 'missing' }
  | { reason: 'not-stopped'; state: string }
  | { reason: 'leased'; holder: string }
  /** Another job took the output since this one stopped: its shards there may be gone or replaced. */
  | { reason: 'taken'; taker: string };

export class JobRecords {
  private readonly scripts;
  private readonly openBuffers;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.openBuffers = new OpenBuffers(redis, keys);
    this.scripts = {
      transition: defineLuaScript(redis, TRANSITION),
      restart: defineLuaScript(redis, RESTART),
      start: defineLuaScript(redis, START),
      finishSplit: defineLuaScript(redis, FINISH_SPLIT),
      setLinesRead: defineLuaScript(redis, SET_LINES_READ),
      setFields: defineLuaScript(redis, SET_FIELDS),
      claimFinalize: defineLuaScript(redis, CLAIM_FINALIZE),
      releaseFinalize: defineLuaScript(redis, RELEASE_FINALIZE),
      prune: defineLuaScript(redis, PRUNE),
    };
  }

  /**
   * Records a new job (state queued, generation 0); `leaseKey` is the output lease it holds. The
   * job becomes the output's last taker: an older job stopped there can no longer be retried.
   */
  async create(id: string, options: JobOptions, extra: { schedule?: string | undefined; leaseKey?: string } = {}): Promise<void> {
    // Redis's clock, as every time of a job: `list` orders by it and the retention ages by it, and
    // the submitting machine's clock may be off.
    const now = await redisNow(this.redis);
    const transaction = this.redis.multi();
    if (extra.leaseKey) transaction.set(this.keys.takenOf(extra.leaseKey), id);
    await transaction
      .hset(this.keys.job(id), {
        options: JSON.stringify(options),
        state: 'queued',
        generation: 0,
        createdAt: now,
        ...(extra.schedule ? { schedule: extra.schedule } : {}),
        ...(extra.leaseKey ? { lease: extra.leaseKey } : {}),
      })
      .zadd(this.keys.jobs, now, id)
      .zadd(this.keys.activeJobs, now, id)
      .exec();
  }

  /**
   * Removes the record of a job whose submit failed before its split was queued, so no job stays
   * `queued` forever. DEL and ZREM, not a script: a full Redis refuses scripts that may write, and
   * these commands, which only free memory, it still takes.
   */
  async discard(id: string): Promise<void> {
    await this.redis.multi().del(this.keys.job(id)).zrem(this.keys.jobs, id).zrem(this.keys.activeJobs, id).exec();
  }

  /** The job's record, or undefined when Redis does not have it (never submitted, or Redis lost it). */
  async get(id: string): Promise<CorpusJobRecord | undefined> {
    const hash = await this.redis.hgetall(this.keys.job(id));
    if (!hash.options) return undefined;
    const number = (field: string): number => Number(hash[field] ?? 0);
    const optional = (field: string): number | null => (hash[field] === undefined ? null : Number(hash[field]));
    const state = hash.state as CorpusJobState;
    const generation = number('generation');
    return {
      id,
      options: JSON.parse(hash.options) as JobOptions,
      state,
      generation,
      createdAt: number('createdAt'),
      startedAt: optional('startedAt'),
      resumedAt: optional('resumedAt'),
      activeMs: number('activeMs'),
      linesRedone: number('linesRedone'),
      finishedAt: optional('finishedAt'),
      error: hash.error ?? null,
      errorCode: hash.errorCode ?? null,
      schedule: hash.schedule ?? null,
      reusedFrom: hash.reusedFrom ? (JSON.parse(hash.reusedFrom) as ReusedFrom) : null,
      reuseError: hash.reuseError ?? null,
      lastRetry: hash.lastRetry ?? null,
      lastRetryAt: optional('lastRetryAt'),
      finishing: state === 'running' && hash.finalizing !== undefined && Number(hash.finalizing) === generation,
      linesRead: number('linesRead'),
      totalLines: optional('totalLines'),
      totalShards: optional('totalShards'),
      batchesTotal: number('batchesTotal'),
      batchesDone: number('batchesDone'),
      rowsEmbedded: number('rowsEmbedded'),
      rowsFailed: number('rowsFailed'),
      rowsBlank: number('rowsBlank'),
      rowsTruncated: number('rowsTruncated'),
      tokens: number('tokens'),
      shardsWritten: number('shardsWritten'),
      rowsReused: number('rowsReused'),
      rowsNew: number('rowsNew'),
      rowsChanged: number('rowsChanged'),
      rowsUnchanged: number('rowsUnchanged'),
      rowsDeleted: number('rowsDeleted'),
    };
  }

  /** Just the state (cheap); undefined when the job does not exist. */
  async state(id: string): Promise<CorpusJobState | undefined> {
    return ((await this.redis.hget(this.keys.job(id), 'state')) ?? undefined) as CorpusJobState | undefined;
  }

  /** State and generation in one round trip, for fencing checks outside Lua. */
  async stateAndGeneration(id: string): Promise<{ state: CorpusJobState; generation: number } | undefined> {
    const [state, generation] = await this.redis.hmget(this.keys.job(id), 'state', 'generation');
    return state ? { state: state as CorpusJobState, generation: Number(generation ?? 0) } : undefined;
  }

  /**
   * Removes the records (and what else of them is left: ledger, pins, ends, shard starts) of jobs that ended before
   * `endedBefore`, oldest first, for at most `budgetMs`. Redis must not grow with every run of a
   * schedule. Returns how many went.
   */
  async prune(endedBefore: number, budgetMs = PRUNE_BUDGET_MS): Promise<number> {
    const deadline = Date.now() + budgetMs;
    let removed = 0;
    // Records kept (still running, or ended after the cutoff) are stepped over: before, a prune
    // read only the 100 oldest, and 100 old jobs still running stopped every prune behind them.
    let kept = 0;
    while (Date.now() < deadline) {
      // Scored by creation, which comes before the end: every job that ended before the cutoff is here.
      const ids = await this.redis.zrangebyscore(this.keys.jobs, '-inf', endedBefore, 'LIMIT', kept, PRUNE_BATCH);
      for (const id of ids) {
        if ((await this.pruneOne(id, endedBefore)) === 1) removed += 1;
        else kept += 1;
      }
      if (ids.length < PRUNE_BATCH) break;
    }
    return removed;
  }

  /**
   * A job whose record Redis lost (the caller found it gone): its other keys go now, rather than
   * with the prune 30 days on. A job that has its record is left alone.
   */
  async forgetLost(id: string): Promise<boolean> {
    return (await this.pruneOne(id, 0)) === 1;
  }

  private async pruneOne(id: string, endedBefore: number): Promise<number> {
    // An ended job dropped its buffers; one whose record is gone may have left some, listed here.
    const [lease, open] = await Promise.all([this.redis.hget(this.keys.job(id), 'lease'), this.redis.smembers(this.keys.openShards(id))]);
    const taken = lease ? [this.keys.takenOf(lease)] : [];
    const buffers = open.map((shard) => this.keys.shard(id, Number(shard)));
    const keys = [this.keys.job(id), this.keys.writtenShards(id), this.keys.pins(id), this.keys.objectEnds(id), this.keys.shardStarts(id), this.keys.openShards(id), this.keys.jobs, this.keys.activeJobs, ...buffers, ...taken];
    return (await this.scripts.prune(keys, id, endedBefore, buffers.length)) as number;
  }

  /** Newest first. */
  async list(limit = 50): Promise<CorpusJobRecord[]> {
    return this.read(await this.redis.zrevrange(this.keys.jobs, 0, limit - 1));
  }

  /**
   * The newest `limit` jobs and, after them, every older one still queued or running (the
   * `jobs:active` index), newest first: a running job fell out of the newest 50 once a schedule had
   * fired 50 times since it started, and the dashboard lost sight of it. Each record is read once.
   * An older version's workers end jobs without taking them out of the index: ended ones found
   * only there are left out.
   */
  async listWithActive(limit = 50): Promise<CorpusJobRecord[]> {
    const [newest, active] = await Promise.all([this.redis.zrevrange(this.keys.jobs, 0, limit - 1), this.redis.zrevrange(this.keys.activeJobs, 0, -1)]);
    const shown = new Set(newest);
    const records = await this.read([...newest, ...active.filter((id) => !shown.has(id))]);
    return records.filter((record) => shown.has(record.id) || record.state === 'queued' || record.state === 'running');
  }

  private async read(ids: readonly string[]): Promise<CorpusJobRecord[]> {
    const records = await Promise.all(ids.map((id) => this.get(id)));
    return records.filter((record): record is CorpusJobRecord => record !== undefined);
  }

  /** The split step of `generation` starts: queued → running. False if the job is stopped or newer. */
  async markRunning(id: string, generation: number): Promise<boolean> {
    return (await this.scripts.start([this.keys.job(id)], generation)) === 1;
  }

  /**
   * Finalize of `generation` starts writing the output; false if the job is not running in it.
   * While claimed, `markCancelled` answers 'finishing' (the job's lease must outlive `_SUCCESS`).
   */
  async claimFinalize(id: string, generation: number): Promise<boolean> {
    return (await this.scripts.claimFinalize([this.keys.job(id)], generation)) === 1;
  }

  /** A finalize attempt failed and will be tried again: until then the job can be cancelled. */
  async releaseFinalize(id: string, generation: number): Promise<void> {
    await this.scripts.releaseFinalize([this.keys.job(id)], generation);
  }

  async markCompleted(id: string, generation: number): Promise<boolean> {
    return (await this.transition(id, 'completed', ['running'], { timeField: 'finishedAt', generation })) === 'changed';
  }

  /**
   * Stops the job with a reason; only a queued or running job can fail. With `generation`, only
   * if the job is still in it (a late failure of an earlier generation fails nothing).
   */
  async markFailed(id: string, error: string, errorCode: string, generation?: number): Promise<boolean> {
    return (await this.transition(id, 'failed', ['queued', 'running'], { error, errorCode, timeField: 'finishedAt', generation })) === 'changed';
  }

  /**
   * `embedq cancel`: stops the job and frees its open buffers in one step. 'finishing': finalize
   * is writing the output, and the job will complete (or fail) on its own.
   */
  async markCancelled(id: string): Promise<'cancelled' | 'finishing' | 'unchanged'> {
    const result = await this.transition(id, 'cancelled', ['queued', 'running'], { error: 'cancelled by user', errorCode: 'CANCELLED', timeField: 'finishedAt' });
    return result === 'changed' ? 'cancelled' : result;
  }

  /**
   * Back to queued for `embedq retry`, in one script: takes the output lease again, drops the
   * buffers of unwritten shards, takes `gone` (written shards whose files are no longer in the
   * output) out of the ledger, rebuilds the counters from the written shards and bumps the
   * generation. Returns the new generation, or why not.
   */
  async restart(id: string, gone: readonly number[] = []): Promise<{ generation: number } | RestartRefusal> {
    for (let attempt = 0; attempt < OPEN_BUFFER_ATTEMPTS; attempt += 1) {
      const { buffers, shards, lease } = await this.openBuffers.declared(id);
      const taken = lease.map((key) => this.keys.takenOf(key));
      const result = (await this.scripts.restart(
        [this.keys.job(id), this.keys.openShards(id), this.keys.writtenShards(id), this.keys.activeJobs, ...buffers, ...lease, ...taken],
        id,
        shards.length,
        ...shards,
        gone.length,
        ...gone,
      )) as [number, string?, string?];
      if (result[1] === STALE_OPEN_BUFFERS) continue;
      if (result[0] > 0) return { generation: result[0] };
      if (result[1] === 'missing') return { reason: 'missing' };
      // A holder that stopped moments ago is named by its job id, which is what the operator needs.
      if (result[1] === 'leased') return { reason: 'leased', holder: parseHolder(result[2]!).jobId };
      if (result[1] === 'taken') return { reason: 'taken', taker: result[2]! };
      return { reason: 'not-stopped', state: result[1]! };
    }
    throw new Error(`job ${id}: shard buffers kept appearing during retry; try again`);
  }

  async setLinesRead(id: string, generation: number, linesRead: number): Promise<void> {
    await this.scripts.setLinesRead([this.keys.job(id)], generation, linesRead);
  }

  /** `--reuse`: which previous output the job builds on, or why it cannot; ids gone (the deletes). Fenced by generation. */
  async setReuse(id: string, generation: number, fields: { reusedFrom?: ReusedFrom; reuseError?: string; rowsDeleted?: number }): Promise<boolean> {
    const args: Array<string | number> = [];
    if (fields.reusedFrom) args.push('reusedFrom', JSON.stringify(fields.reusedFrom));
    if (fields.reuseError !== undefined) args.push('reuseError', fields.reuseError);
    if (fields.rowsDeleted !== undefined) args.push('rowsDeleted', fields.rowsDeleted);
    return (await this.scripts.setFields([this.keys.job(id)], generation, ...args)) === 1;
  }

  /**
   * A step of `generation` failed an attempt, or was handed back for later (429s), and will be
   * retried: what went wrong, and when by Redis's clock, as the job's other times.
   */
  async noteRetry(id: string, generation: number, message: string): Promise<void> {
    await this.scripts.setFields([this.keys.job(id)], generation, 'lastRetry', message, 'lastRetryAt', await redisNow(this.redis));
  }

  /** The split of `generation` read the whole corpus; undefined if the job stopped or moved on. */
  async finishSplit(
    id: string,
    generation: number,
    totals: { totalLines: number; totalShards: number },
  ): Promise<{ shardsWritten: number; totalShards: number } | undefined> {
    const [shardsWritten, totalShards] = (await this.scripts.finishSplit([this.keys.job(id)], generation, totals.totalLines, totals.totalShards)) as [
      number,
      number,
    ];
    return shardsWritten < 0 ? undefined : { shardsWritten, totalShards };
  }

  private async transition(
    id: string,
    to: CorpusJobState,
    from: readonly CorpusJobState[],
    fields: { error?: string; errorCode?: string; timeField?: 'startedAt' | 'finishedAt'; generation?: number | undefined },
  ): Promise<'changed' | 'unchanged' | 'finishing'> {
    // Only a failure or a cancel drops buffers; other transitions need not read them.
    const drop = to === 'failed' || to === 'cancelled';
    const { buffers, shards, lease } = await this.openBuffers.declared(id, drop);
    const changed = await this.scripts.transition(
      [this.keys.job(id), this.keys.openShards(id), this.keys.activeJobs, ...buffers, ...lease],
      to,
      from.join(','),
      fields.error ?? '',
      fields.errorCode ?? '',
      fields.timeField ?? '',
      shards.length,
      fields.generation ?? '',
      id,
      ...shards,
    );
    if (changed === 2) await this.openBuffers.dropLeftovers(id);
    if (changed === 3) return 'finishing';
    return changed === 1 || changed === 2 ? 'changed' : 'unchanged';
  }
}
