import { EmbedqError } from '../src/errors.js';
import type { LeaseHolder } from './output-lease.js';

/** Errors of the job lifecycle that commands report with a code and a message, never a stack. */

/** Another job holds the output location (invariant 7). Exit 2. */
export class OutputLeasedError extends EmbedqError {
  readonly code = 'OUTPUT_LEASED';
  readonly retryable = false;
  readonly holder: string;
  /** The holder stopped moments ago: the lease goes within a minute by itself. */
  readonly ending: boolean;
  constructor(
    readonly output: string,
    holder: LeaseHolder,
  ) {
    super(
      holder.ending
        ? `${output}: job ${holder.jobId} stopped moments ago and a step of it may still be writing there; try again within a minute, or resume it (embedq retry ${holder.jobId})`
        : `${output} is being written by job ${holder.jobId}; wait for it to end or cancel it (embedq cancel ${holder.jobId})`,
    );
    this.holder = holder.jobId;
    this.ending = holder.ending;
  }
}

/** A new run into an output that holds an earlier run's files, without `--overwrite`. Exit 2. */
export class OutputNotEmptyError extends EmbedqError {
  readonly code = 'OUTPUT_NOT_EMPTY';
  readonly retryable = false;
  constructor(
    readonly output: string,
    readonly found: readonly string[],
  ) {
    const shown = found.slice(0, 3).join(', ') + (found.length > 3 ? `, … (${found.length} files)` : '');
    super(`${output} already holds a run's files (${shown}); choose another output, or add --overwrite to remove them first`);
  }
}

/**
 * A submit by hand into the root of a schedule's runs: its `_latest.json` names a run in a folder
 * below it (a template with a placeholder). Accepted, the run's shards, `_manifest.json` and
 * `_SUCCESS` lay beside the runs' folders, and a glob over the root mixed them with every run's. Exit 2.
 */
export class OutputIsScheduleRootError extends EmbedqError {
  readonly code = 'OUTPUT_NOT_EMPTY';
  readonly retryable = false;
  constructor(output: string, latest: string, schedule: string | undefined) {
    const whose = schedule === undefined ? 'a schedule' : `schedule ${schedule}`;
    const run = schedule === undefined ? '' : ` (embedq schedule run ${schedule})`;
    super(
      `${output} is the root of ${whose}'s runs (its _latest.json names ${latest}): a run submitted here would lie beside them, and a glob over the root would mix its files with theirs; submit into a folder of its own, or start a run of the schedule${run}`,
    );
  }
}

/**
 * A job found, before writing to its output, a finished run of another job there, written since
 * its submit: Redis was brought back from an older state. Fails the job; the output is left as it is.
 */
export class OutputTakenError extends EmbedqError {
  readonly code = 'OUTPUT_NOT_EMPTY';
  readonly retryable = false;
  constructor(output: string, other: string) {
    super(
      `${output} holds the finished run of job ${other} (its _manifest.json), written after this job was submitted (was Redis brought back from an older snapshot?); this job stops and leaves that output alone`,
    );
  }
}

/** The job's record is gone from Redis. Exit 1. */
export class JobLostError extends EmbedqError {
  readonly code = 'JOB_LOST';
  readonly retryable = true;
  constructor(readonly jobId: string) {
    super(
      `job ${jobId} no longer exists in Redis (a mistyped id or another EMBEDQ_REDIS_PREFIX? was Redis flushed, restarted without persistence, or did it evict keys (a maxmemory-policy other than noeviction)? did the job end more than EMBEDQ_JOB_RETENTION_DAYS ago?)`,
    );
  }
}

/**
 * Part of a running job's state is gone from Redis (deleted, evicted, a partial restore): the job
 * cannot finish as it is, so it fails instead of waiting forever. A retry rebuilds it from the
 * shards the ledger still lists.
 */
export class JobStateLostError extends EmbedqError {
  readonly code = 'JOB_STATE_LOST';
  readonly retryable = false;
  constructor(jobId: string, lost: LostState) {
    super(
      `Redis lost ${lost} of job ${jobId} while it ran (a key deleted, or evicted under a maxmemory-policy other than noeviction?); it cannot finish as it is: embedq retry ${jobId} runs it again from the shards still recorded as written`,
    );
  }
}

/** What a script found missing (LOST_STATE_LUA's checks). */
export type LostState = 'the ledger of written shards' | `shard ${number}'s buffer` | `step ${string}'s record`;

/** Redis did not answer in time. Exit 1. */
export class RedisUnavailableError extends EmbedqError {
  readonly code = 'REDIS_UNAVAILABLE';
  readonly retryable = true;
}

/** Redis is at maxmemory (noeviction) and refused a write the command needed. Exit 1. */
export class RedisFullError extends EmbedqError {
  readonly code = 'REDIS_FULL';
  readonly retryable = true;
}

/**
 * Lines rejected so thickly that the cause must be systematic (see shard-buffer.ts): the job
 * fails rather than completing with every row in `_errors.jsonl`.
 */
export class SystematicRejectionError extends EmbedqError {
  readonly code = 'PROVIDER_REJECTED_SYSTEMATIC';
  readonly retryable = false;
}

/**
 * A shard's Redis buffer lost a batch while the writer read it slice by slice (the job was
 * stopped or retried, which drops its buffers, or Redis lost data). Retryable: the next attempt
 * finds the job stopped and skips, or reads a complete buffer.
 */
export class ShardBufferChangedError extends EmbedqError {
  readonly code = 'SHARD_BUFFER_CHANGED';
  readonly retryable = true;
}
