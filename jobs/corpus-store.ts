import type { RedisClient } from '../src/redis/redis-client.js';
import { redisNow } from '../src/redis/redis-clock.js';

import { CorpusKeys } from './corpus-keys.js';
import { CorpusPins } from './corpus-pins.js';
import { JobRecords, type CorpusJobRecord, type CorpusJobState } from './job-record.js';
import { OutputLeases } from './output-lease.js';
import { ShardBuffers } from './shard-buffer.js';
import { ShardLedger } from './shard-ledger.js';

export type { CorpusJobCounters, CorpusJobRecord, CorpusJobState } from './job-record.js';
export type { BatchStatus, ErrorRecord, ShardProgress } from './shard-buffer.js';
export type { ShardStats } from './shard-ledger.js';

/**
 * The durable state of corpus jobs in Redis, one owner per part: job records (`jobs`), shard
 * buffers while shards are embedded (`buffers`), the ledger of written shards (`ledger`), the
 * versions of the corpus objects the split read (`pins`) and output leases (`leases`). Readers
 * (CLI, dashboard) use `get`, `list` and `state`. Records of ended jobs are kept for a retention
 * period; each submit removes older ones (`pruneEnded`).
 */
export class CorpusStore {
  readonly keys: CorpusKeys;
  readonly jobs: JobRecords;
  readonly buffers: ShardBuffers;
  readonly ledger: ShardLedger;
  readonly pins: CorpusPins;
  readonly leases: OutputLeases;

  /**
   * `jobRetentionMs`: how long records of ended jobs are kept (0: for good); `pruneEnded` removes
   * older ones.
   */
  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly options: { jobRetentionMs?: number } = {},
  ) {
    this.keys = new CorpusKeys(prefix);
    this.jobs = new JobRecords(redis, this.keys);
    this.buffers = new ShardBuffers(redis, this.keys);
    this.ledger = new ShardLedger(redis, this.keys);
    this.pins = new CorpusPins(redis, this.keys);
    this.leases = new OutputLeases(redis, this.keys);
  }

  /** A job's record; undefined when Redis does not have it. */
  get(id: string): Promise<CorpusJobRecord | undefined> {
    return this.jobs.get(id);
  }

  /** Newest first. */
  list(limit = 50): Promise<CorpusJobRecord[]> {
    return this.jobs.list(limit);
  }

  /**
   * Redis's clock in ms (TIME). Job ids and the retention run on it: a machine whose clock is off
   * must not order runs wrongly, nor age records it did not write.
   */
  now(): Promise<number> {
    return redisNow(this.redis);
  }

  /**
   * Removes records of jobs that ended longer ago than the retention, by Redis's clock; how many
   * went. Before, it was the submitting machine's clock: a submit from one 2 days ahead removed
   * every ended job's record under a 1-day retention.
   */
  async pruneEnded(): Promise<number> {
    const retention = this.options.jobRetentionMs ?? 0;
    return retention > 0 ? this.jobs.prune((await this.now()) - retention) : 0;
  }

  state(id: string): Promise<CorpusJobState | undefined> {
    return this.jobs.state(id);
  }
}
