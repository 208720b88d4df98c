import { createHash, randomUUID } from 'node:crypto';

import type { Queue } from 'bullmq';
import type { ChainableCommander } from 'ioredis';

import { defineLuaScript, type LuaScript } from '../src/redis/lua-script.js';
import type { RedisClient } from '../src/redis/redis-client.js';
import { sleep } from '../src/sleep.js';

import type { CorpusStore } from './corpus-store.js';
import { JOB_NAMES } from './queues.js';
import { assertNotBullmqQueueKey, isBullmqQueueKey } from './schedule-name.js';

/**
 * Schedules: their definitions and run history in Redis, and the BullMQ Job Scheduler behind
 * each one. A Job Scheduler keeps one delayed job per schedule and adds the next when the current
 * one starts, so each tick runs once however many workers there are.
 *
 * Keys under `<prefix>:`
 *   schedules              ZSET  name → creation time (ms)
 *   schedule:<name>        HASH  definition (JSON), counters, current run, last run, last error, paused
 *   schedule:<name>:ticks  LIST  newest first, last 100: `<tick ms> <outcome> <job id or reason>`
 *   schedules:edit         STRING  held by one `schedule add` or `apply` at a time (whileEditing)
 *   schedules:latest:<sha1 of root>  STRING  held by one run moving the root's `_latest.json` (whilePublishingLatest)
 *
 * BullMQ's `schedule` queue keeps its keys beside them (`schedule:wait`, `schedule:repeat`, …):
 * no name that is one of those is ever written or deleted here (schedule-name.ts).
 */

export type OverlapPolicy = 'skip' | 'queue';

export interface ScheduleDefinition {
  name: string;
  cron: string;
  tz: string;
  input: string;
  /** The output template, local paths made absolute. */
  out: string;
  /** Submit options as validated at `add` (output excluded: it comes from the template). */
  options: Record<string, unknown>;
  incremental: boolean;
  onOverlap: OverlapPolicy;
}

export interface ScheduleRecord extends ScheduleDefinition {
  createdAt: number;
  updatedAt: number;
  runs: number;
  /** Ticks that came while the previous run was still going, under `--on-overlap skip`. */
  skipped: number;
  /**
   * Ticks that never came: while no worker ran (all stopped, or restarting), BullMQ keeps only the
   * schedule's next tick, which runs late when a worker is back; the ones after it are gone.
   */
  missed: number;
  /** Runs that could not start (options no longer valid, submit refused). */
  failures: number;
  lastJobId: string | null;
  lastOutput: string | null;
  lastTickAt: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
  /** Since when `schedule pause` has held the schedule's ticks (null: not paused). */
  pausedAt: number | null;
}

export interface TickLogEntry {
  tickMillis: number;
  /** `paused`: a tick while the schedule was paused; it starts nothing and is not counted as skipped. */
  outcome: 'submitted' | 'skipped' | 'queued' | 'failed' | 'paused' | 'missed';
  detail: string;
}

/** A claim older than this without its corpus job record is a submit that died half-way. */
const CLAIM_GRACE_MS = 60_000;
const TICK_LOG_LENGTH = 100;
const ACTIVE_STATES = new Set(['queued', 'running']);
/** An edit (or a move of `_latest.json`) holds its lock this long at most: one that died frees it by itself. */
const LOCK_MS = 30_000;
const RELEASE_IF_HELD = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;
/**
 * The record, then the name in the list: a write refused half-way leaves the name unlisted (a
 * listed name without record once made every `schedule list` fail). Returns ZADD's count. A
 * schedule changed to `--on-overlap skip` lets its waiting tick go at once: left waiting, it kept
 * fresh ticks from running until its next poll.
 */
const UPSERT = `redis.call('HSET', KEYS[1], 'definition', ARGV[1], 'updatedAt', ARGV[2])
redis.call('HSETNX', KEYS[1], 'createdAt', ARGV[2])
if cjson.decode(ARGV[1]).onOverlap ~= 'queue' then redis.call('HDEL', KEYS[1], 'queuedTick') end
return redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])`;

// KEYS: schedule. ARGV: tick. Queues the tick only while the schedule (as stored now, not as the
// tick read it) says `--on-overlap queue` and no other tick waits.
const QUEUE_TICK = `local definition = redis.call('HGET', KEYS[1], 'definition')
if not definition or cjson.decode(definition).onOverlap ~= 'queue' then return 'not-queueing' end
if redis.call('HSETNX', KEYS[1], 'queuedTick', ARGV[1]) == 0 then return 'taken' end
return 'queued'`;

export class ScheduleStore {
  private readonly releaseIfHeld: LuaScript;
  private readonly upsertScript: LuaScript;
  private readonly queueTickScript: LuaScript;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {
    this.releaseIfHeld = defineLuaScript(redis, RELEASE_IF_HELD);
    this.upsertScript = defineLuaScript(redis, UPSERT);
    this.queueTickScript = defineLuaScript(redis, QUEUE_TICK);
  }

  /** Throws for a name whose key may be BullMQ's: the last guard before any command on it. */
  private key = (name: string): string => {
    assertNotBullmqQueueKey(name);
    return `${this.prefix}:schedule:${name}`;
  };
  private ticksKey = (name: string): string => `${this.key(name)}:ticks`;
  private get namesKey(): string {
    return `${this.prefix}:schedules`;
  }

  /**
   * Runs `edit` while no other `schedule add` or `apply` runs, on any machine. Each reads every
   * schedule to check the roots (schedule-overlap.ts), then writes: two at once could each pass
   * beside the other and leave two schedules sharing a root. Waits for the other edit, at most as
   * long as a lock can be held.
   */
  async whileEditing<T>(edit: () => Promise<T>): Promise<T> {
    return this.whileHolding(`${this.prefix}:schedules:edit`, 'another schedule change', edit);
  }

  /**
   * Runs `publish` while no other run moves the `_latest.json` at schedule root `root`: its check
   * that the pointer names no newer run and its write are one step. Apart, an older run's retry
   * and a newer run finishing together both passed the check, and the pointer went back.
   */
  async whilePublishingLatest<T>(root: string, publish: () => Promise<T>): Promise<T> {
    const key = `${this.prefix}:schedules:latest:${createHash('sha1').update(root).digest('hex')}`;
    return this.whileHolding(key, `another run's _latest.json at ${root}`, publish);
  }

  /** `work` under the lock `key`, waited for at most as long as a lock can be held. */
  private async whileHolding<T>(key: string, holder: string, work: () => Promise<T>): Promise<T> {
    const token = randomUUID();
    const deadline = Date.now() + LOCK_MS + 5_000;
    while ((await this.redis.set(key, token, 'PX', LOCK_MS, 'NX')) !== 'OK') {
      if (Date.now() > deadline) throw new Error(`${holder} has held ${key} for over ${LOCK_MS / 1000} s; try again`);
      await sleep(50);
    }
    try {
      return await work();
    } finally {
      await this.releaseIfHeld([key], token);
    }
  }

  /** Creates or replaces the definition; counters and history are kept. Returns whether it existed. */
  async upsert(definition: ScheduleDefinition, now = Date.now()): Promise<{ updated: boolean }> {
    const added = await this.upsertScript([this.key(definition.name), this.namesKey], JSON.stringify(definition), now, definition.name);
    return { updated: Number(added) === 0 };
  }

  async get(name: string): Promise<ScheduleRecord | undefined> {
    // Listed by an older version that let such a name in: it is no schedule, and its key is BullMQ's.
    if (isBullmqQueueKey(name)) return undefined;
    const hash = await this.redis.hgetall(this.key(name));
    if (!hash.definition) return undefined;
    const number = (field: string): number => Number(hash[field] ?? 0);
    const optional = (field: string): number | null => (hash[field] === undefined ? null : Number(hash[field]));
    return {
      ...(JSON.parse(hash.definition) as ScheduleDefinition),
      createdAt: number('createdAt'),
      updatedAt: number('updatedAt'),
      runs: number('runs'),
      skipped: number('skipped'),
      missed: number('missed'),
      failures: number('failures'),
      lastJobId: hash.lastJobId ?? null,
      lastOutput: hash.lastOutput ?? null,
      lastTickAt: optional('lastTickAt'),
      lastError: hash.lastError ?? null,
      lastErrorAt: optional('lastErrorAt'),
      pausedAt: optional('pausedAt'),
    };
  }

  /**
   * `schedule pause` / `resume`: while paused, ticks start no run (each is logged as `paused`); the
   * Job Scheduler keeps ticking, so resuming needs nothing reinstalled and the next tick runs.
   * Only an existing schedule is marked, in one script: a remove meanwhile leaves no half record.
   */
  async setPaused(name: string, paused: boolean, now = Date.now()): Promise<'missing' | 'changed' | 'unchanged'> {
    if (isBullmqQueueKey(name)) return 'missing';
    const result = await this.redis.eval(
      `if redis.call('HEXISTS', KEYS[1], 'definition') == 0 then return -1 end
       if ARGV[1] == '1' then return redis.call('HSETNX', KEYS[1], 'pausedAt', ARGV[2]) end
       return redis.call('HDEL', KEYS[1], 'pausedAt')`,
      1,
      this.key(name),
      paused ? '1' : '0',
      String(now),
    );
    return result === -1 ? 'missing' : result === 1 ? 'changed' : 'unchanged';
  }

  async names(): Promise<string[]> {
    return this.redis.zrange(this.namesKey, 0, -1);
  }

  /** Every schedule's record, oldest first. */
  async list(): Promise<ScheduleRecord[]> {
    const records = await Promise.all((await this.names()).map((name) => this.get(name)));
    return records.filter((record) => record !== undefined);
  }

  /**
   * Marks that Redis holds the schedules as a schedules file was last checked or applied. A Redis
   * that lost its data (restarted without persistence, flushed) lost the mark too: only then may a
   * worker put back the file's missing schedules, which otherwise were removed on purpose.
   */
  async recordFileCheck(): Promise<void> {
    await this.redis.set(this.fileCheckKey, String(Date.now()));
  }

  async hasFileCheck(): Promise<boolean> {
    return (await this.redis.exists(this.fileCheckKey)) === 1;
  }

  private get fileCheckKey(): string {
    return `${this.prefix}:schedules:file-checked`;
  }

  async remove(name: string): Promise<boolean> {
    if (isBullmqQueueKey(name)) {
      // Only the listing an older version left: the key of that name is BullMQ's (`apply --prune`
      // deleted the queue's delayed set, and with it every schedule's next tick).
      await this.redis.zrem(this.namesKey, name);
      return false;
    }
    const [[, removed]] = (await this.redis.multi().zrem(this.namesKey, name).del(this.key(name), this.ticksKey(name)).exec()) as [[unknown, number]];
    return Number(removed) === 1;
  }

  /**
   * Takes the schedule's single writer slot for a new run `runId`, unless its current run is still
   * queued or running (or was claimed less than a minute ago and has no record yet). WATCH on a
   * connection of its own makes two claimers (two ticks, a tick and `schedule run`) race safely.
   * Returns the previous run's id and whether it completed, or `busy` with the active run.
   */
  async claim(
    name: string,
    runId: string,
    corpora: CorpusStore,
    now = Date.now(),
  ): Promise<{ claimed: true; previousJobId: string | null; previousCompleted: boolean } | { claimed: false; activeJobId: string }> {
    const connection = this.redis.duplicate();
    // Errors surface on the commands below; without a listener an 'error' event would crash the process.
    connection.on('error', () => undefined);
    try {
      for (let attempt = 0; attempt < 20; attempt++) {
        await connection.watch(this.key(name));
        const [current, claimedAt] = await connection.hmget(this.key(name), 'current', 'claimedAt');
        const previous = current ? await corpora.get(current) : undefined;
        const pending = current && !previous && now - Number(claimedAt ?? 0) < CLAIM_GRACE_MS;
        if (current && (pending || (previous && ACTIVE_STATES.has(previous.state)))) {
          await connection.unwatch();
          return { claimed: false, activeJobId: current };
        }
        const result = await connection.multi().hset(this.key(name), { current: runId, claimedAt: now }).exec();
        if (result !== null) return { claimed: true, previousJobId: current ?? null, previousCompleted: previous?.state === 'completed' };
      }
      throw new Error(`schedule ${name}: could not claim a run slot (contention)`);
    } finally {
      connection.disconnect();
    }
  }

  /** Gives the slot back after a claim whose submit failed, so the next tick is not blocked. */
  async release(name: string, runId: string, previousJobId: string | null): Promise<void> {
    const current = await this.redis.hget(this.key(name), 'current');
    if (current !== runId) return;
    if (previousJobId) await this.redis.hset(this.key(name), 'current', previousJobId);
    else await this.redis.hdel(this.key(name), 'current', 'claimedAt');
  }

  async recordRun(name: string, tickMillis: number, jobId: string, output: string): Promise<void> {
    const transaction = this.redis
      .multi()
      .hincrby(this.key(name), 'runs', 1)
      .hset(this.key(name), { lastJobId: jobId, lastOutput: output, lastTickAt: tickMillis });
    await this.logTick(name, { tickMillis, outcome: 'submitted', detail: jobId }, transaction);
  }

  async recordPausedTick(name: string, tickMillis: number): Promise<void> {
    await this.logTick(name, { tickMillis, outcome: 'paused', detail: 'schedule paused' });
  }

  /** `count` ticks after `tickMillis` that no worker ran (the last at `lastMillis`). */
  async recordMissed(name: string, tickMillis: number, count: number, lastMillis: number): Promise<void> {
    const transaction = this.redis.multi().hincrby(this.key(name), 'missed', count);
    const detail = `${count} tick${count === 1 ? '' : 's'} after this one, to ${new Date(lastMillis).toISOString()}, never came: no worker ran then`;
    await this.logTick(name, { tickMillis, outcome: 'missed', detail }, transaction);
  }

  async recordSkip(name: string, tickMillis: number, reason: string): Promise<void> {
    const transaction = this.redis.multi().hincrby(this.key(name), 'skipped', 1);
    await this.logTick(name, { tickMillis, outcome: 'skipped', detail: reason }, transaction);
  }

  /**
   * `--on-overlap queue`: holds at most one tick waiting for the active run (later overlapping
   * ticks are skipped, or a slow run would pile up a backlog). `taken` when one is already waiting,
   * `not-queueing` when the schedule no longer queues (changed to skip, or removed).
   */
  async queueTick(name: string, tickMillis: number, activeJobId: string): Promise<'queued' | 'taken' | 'not-queueing'> {
    const answer = (await this.queueTickScript([this.key(name)], tickMillis)) as 'queued' | 'taken' | 'not-queueing';
    if (answer === 'queued') await this.logTick(name, { tickMillis, outcome: 'queued', detail: `waiting for ${activeJobId}` });
    return answer;
  }

  /** The tick waiting under `--on-overlap queue`, if any. */
  async queuedTick(name: string): Promise<number | null> {
    const tick = await this.redis.hget(this.key(name), 'queuedTick');
    return tick === null ? null : Number(tick);
  }

  /** The queued tick ran (or gave up): the next overlapping tick may queue again. */
  async unqueueTick(name: string, tickMillis: number): Promise<void> {
    if ((await this.redis.hget(this.key(name), 'queuedTick')) === String(tickMillis)) await this.redis.hdel(this.key(name), 'queuedTick');
  }

  async recordFailure(name: string, tickMillis: number, message: string, now = Date.now()): Promise<void> {
    const transaction = this.redis
      .multi()
      .hincrby(this.key(name), 'failures', 1)
      .hset(this.key(name), { lastError: message, lastErrorAt: now, lastTickAt: tickMillis });
    await this.logTick(name, { tickMillis, outcome: 'failed', detail: message }, transaction);
  }

  /**
   * A run the schedule started failed: counted with the ticks that could not start one, and its
   * reason kept as the last error (before, it showed only as the last run's state, until the next tick).
   */
  async recordRunFailed(name: string, jobId: string, message: string, now = Date.now()): Promise<void> {
    // A schedule removed meanwhile keeps no half record.
    if (!(await this.redis.exists(this.key(name)))) return;
    await this.redis
      .multi()
      .hincrby(this.key(name), 'failures', 1)
      .hset(this.key(name), { lastError: `run ${jobId} failed: ${message}`, lastErrorAt: now })
      .exec();
  }

  /** A run completed: the schedule's last error, if any, is behind it. */
  async recordRunCompleted(name: string): Promise<void> {
    await this.redis.hdel(this.key(name), 'lastError', 'lastErrorAt');
  }

  async ticks(name: string): Promise<TickLogEntry[]> {
    const entries = await this.redis.lrange(this.ticksKey(name), 0, -1);
    return entries.map((entry) => {
      const [tick, outcome, ...detail] = entry.split(' ');
      return { tickMillis: Number(tick), outcome: outcome as TickLogEntry['outcome'], detail: detail.join(' ') };
    });
  }

  /**
   * Adds the tick to its log, in the same transaction as the counts it goes with (`transaction`):
   * a reader saw `runs` at 2 while the log had one submitted tick.
   */
  private async logTick(name: string, entry: TickLogEntry, transaction: ChainableCommander = this.redis.multi()): Promise<void> {
    await transaction
      .lpush(this.ticksKey(name), `${entry.tickMillis} ${entry.outcome} ${entry.detail}`)
      .ltrim(this.ticksKey(name), 0, TICK_LOG_LENGTH - 1)
      .exec();
  }
}

/** Payload of a `schedule-tick` job: the schedule's name; the tick time comes from the job. */
export interface ScheduleTickPayload {
  v: 1;
  schedule: string;
  /** Set on a re-queued tick (`--on-overlap queue`) and by `schedule run`: the tick it stands for. */
  tickMillis?: number;
  /** Set on a re-queued tick: the `createdAt` of the schedule it waits on, so that it never runs on a schedule added anew under the name. */
  scheduleCreatedAt?: number;
}

/** Installs (or replaces) the BullMQ Job Scheduler that adds one `schedule-tick` job per tick. */
export async function installScheduler(queue: Queue, definition: Pick<ScheduleDefinition, 'name' | 'cron' | 'tz'>): Promise<void> {
  const payload: ScheduleTickPayload = { v: 1, schedule: definition.name };
  await queue.upsertJobScheduler(definition.name, { pattern: definition.cron, tz: definition.tz }, { name: JOB_NAMES.scheduleTick, data: payload });
}

export async function removeScheduler(queue: Queue, name: string): Promise<void> {
  await queue.removeJobScheduler(name);
}

/**
 * The next tick BullMQ has planned, or null: no Job Scheduler, or one without the job of its next
 * tick. BullMQ keeps a scheduler whose repeat strategy planned no tick (cron-parser threw, before
 * schedule-next-tick.ts) with its last tick as `next`, long past: it never ticked again, and the
 * schedules-file check took it for healthy and never installed it again.
 */
export async function nextTick(queue: Queue, name: string): Promise<number | null> {
  const scheduler = await queue.getJobScheduler(name);
  if (!scheduler?.next) return null;
  // BullMQ's id of a scheduler's job (JobScheduler.getSchedulerNextJobId).
  return (await queue.getJob(`repeat:${name}:${scheduler.next}`)) ? scheduler.next : null;
}
