import type { DefaultJobOptions, QueueOptions } from 'bullmq';

import { MODEL_NAMES, type ModelName } from '../src/models.js';
import { scheduleRepeatStrategy } from './schedule-next-tick.js';

/**
 * The queues. Splitting, embedding and writing have different costs, so each gets its own queue
 * and concurrency: many embed calls wait on the network; shard writes are CPU and memory heavy.
 */
export const QUEUES = {
  /** `split-corpus`: streams a corpus into embed jobs (one per corpus job and generation). */
  split: 'split',
  /** `write-shard` and `finalize-job`. */
  write: 'write',
  /** `schedule-tick`: one per schedule tick (BullMQ Job Schedulers) or `schedule run`. */
  schedule: 'schedule',
} as const;

/**
 * `embed-batch`: one DashScope request of at most 10 lines, in a queue per model with worker slots
 * of its own. Each model has its own rate gate: in one queue, a new job's batches on one model
 * (ahead by priority) took every worker slot freed to wait for that model's gate, and an older job
 * on the other model stood still, its quota unused, until the new job had sent as many batches.
 */
export const EMBED_QUEUES = {
  'text-embedding-v4': 'embed-v4',
  'text-embedding-v3': 'embed-v3',
} as const satisfies Record<ModelName, string>;

/**
 * The one embed queue of versions before the per-model queues. Workers of this version take its
 * steps too, so a rolling upgrade's runs finish: an older worker stopped mid-run handed its steps
 * back there, where no newer worker looked, and the run (and a schedule skipping ticks behind it)
 * stood still for good. Empty once no older worker runs.
 */
export const LEGACY_EMBED_QUEUE = 'embed';

export type EmbedQueueName = (typeof EMBED_QUEUES)[ModelName];
export type QueueName = (typeof QUEUES)[keyof typeof QUEUES] | EmbedQueueName;

export const embedQueue = (model: ModelName): EmbedQueueName => EMBED_QUEUES[model];

export const EMBED_QUEUE_NAMES: readonly EmbedQueueName[] = MODEL_NAMES.map(embedQueue);

export const isEmbedQueue = (name: string): name is EmbedQueueName => (EMBED_QUEUE_NAMES as readonly string[]).includes(name);

/** Whether a worker of `name` runs `embed-batch` steps (a model's queue, or the legacy one). */
export const takesEmbedSteps = (name: string): boolean => isEmbedQueue(name) || name === LEGACY_EMBED_QUEUE;

/** Every queue, in the order a corpus job passes through them (the dashboard's and /metrics' order). */
export const QUEUE_NAMES: readonly QueueName[] = [QUEUES.split, ...EMBED_QUEUE_NAMES, QUEUES.write, QUEUES.schedule];

export const JOB_NAMES = {
  splitCorpus: 'split-corpus',
  embedBatch: 'embed-batch',
  writeShard: 'write-shard',
  finalizeJob: 'finalize-job',
  scheduleTick: 'schedule-tick',
} as const;

/**
 * Attempts for retryable failures (5xx, timeouts, storage hiccups). With the backoff below
 * (1 s doubling, capped at 60 s) they span about 10 minutes of provider trouble before the corpus
 * job is marked failed; `embedq retry` then resumes it without redoing finished work.
 */
export const RETRY_ATTEMPTS = 14;
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_CAP_MS = 60_000;

export const DEFAULT_JOB_OPTIONS: DefaultJobOptions = {
  attempts: RETRY_ATTEMPTS,
  backoff: { type: 'capped-exponential' },
  // Finished jobs are removed at once: Redis memory must not grow with the corpus (invariant 3).
  removeOnComplete: true,
  removeOnFail: { count: 1_000 },
};

/** Queue options shared by producers and workers. */
export function queueOptions(prefix: string, connection: QueueOptions['connection']): QueueOptions {
  return {
    connection,
    prefix,
    defaultJobOptions: DEFAULT_JOB_OPTIONS,
    // BullMQ keeps events (with return values) in a stream of ~10,000 entries by default; cap it.
    streams: { events: { maxLen: 100 } },
    // Schedules' ticks: cron-parser alone lost, repeated or stopped ticks at some DST changes.
    settings: { repeatStrategy: scheduleRepeatStrategy },
  };
}

/** Exponential backoff with full jitter, capped; BullMQ calls it for `backoff.type: 'capped-exponential'`. */
export function cappedExponentialBackoff(attemptsMade: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

/**
 * The shape of a corpus job id (`cj-<time base 36>-<6 hex>`, enqueue.ts's newCorpusJobId), as a
 * regular expression source with the time captured: step ids, schedule outputs and the id's time read it.
 */
export const CORPUS_JOB_ID = 'cj-([0-9a-z]+)-[0-9a-f]+';

/** BullMQ job ids may not contain `:` and may not be all digits. */
export const splitJobId = (corpusJobId: string, generation: number): string => `${corpusJobId}-split-g${generation}`;
export const embedJobId = (corpusJobId: string, generation: number, shard: number, batch: number): string =>
  `${corpusJobId}-g${generation}-s${shard}-b${batch}`;
export const writeShardJobId = (corpusJobId: string, generation: number, shard: number): string =>
  `${corpusJobId}-g${generation}-write-s${shard}`;
export const finalizeJobId = (corpusJobId: string, generation: number): string => `${corpusJobId}-g${generation}-finalize`;

const STEP_OWNER = new RegExp(`^(${CORPUS_JOB_ID})-(?:split-)?g(\\d+)(?:-|$)`);

/**
 * The corpus job and generation a step's id names (the ids above), for a step whose payload is
 * gone: its record lost from Redis, only its id left in a queue. Undefined for other ids.
 */
export function stepOwner(stepId: string): { corpusJobId: string; generation: number } | undefined {
  const match = STEP_OWNER.exec(stepId);
  return match ? { corpusJobId: match[1]!, generation: Number(match[3]) } : undefined;
}
