import type { S3Client } from '@aws-sdk/client-s3';
import { Queue } from 'bullmq';

import { CorpusStore } from '../jobs/corpus-store.js';
import { LEGACY_EMBED_QUEUE, QUEUE_NAMES, queueOptions, type QueueName } from '../jobs/queues.js';
import type { Settings } from '../src/config.js';
import { createDashScopeClient } from '../src/dashscope/dashscope-client.js';
import type { EmbeddingClient } from '../src/embedding.js';
import type { Logger } from '../src/logger.js';
import { instrumentEmbeddingClient } from '../src/metrics/instrumented-client.js';
import { MetricsRecorder } from '../src/metrics/metrics-recorder.js';
import { MODELS, type ModelName } from '../src/models.js';
import { modelLimit, pacingOf, type WorkerPacing } from '../src/rate/fleet-pacing.js';
import { RateGate, rateGateKey } from '../src/rate/rate-gate.js';
import { createRedisClient, describeRedisTarget, type ConnectionOptions, type RedisClient, type RedisTarget } from '../src/redis/redis-client.js';
import { RedisOutageLog } from '../src/redis/redis-outage-log.js';
import { ShardEncoder } from '../src/shards/shard-encoder.js';
import { loadS3Client } from '../src/storage/s3-store.js';
import { StopWatch } from './stop-watch.js';
import { StoppedStepSweeper } from './drop-stopped-steps.js';

/**
 * The composition root: the only place that creates clients. Everything else receives them.
 * Resources are released last-in, first-out.
 */
export interface Services {
  settings: Readonly<Settings>;
  logger: Logger;
  /** Commands and scripts (not BullMQ's blocking connections); one Redis or a cluster client. */
  redis: RedisClient;
  corpora: CorpusStore;
  /** Every queue, and the legacy embed queue workers drain (not shown by the dashboard's own views). */
  queues: Record<QueueName | typeof LEGACY_EMBED_QUEUE, Queue>;
  embeddings: EmbeddingClient;
  /** Worker-side metrics, flushed to Redis while `embedq worker` runs (read by the dashboard's /metrics). */
  metrics: MetricsRecorder;
  /** The shared rate gate of a model (DashScope limits per model and account), paced by these settings. */
  rateGate(model: ModelName): RateGate;
  /**
   * The same shared gate read with another process's pacing (a live worker's, from its heartbeat):
   * its key and limits. For reading its state. `rateGate(model)` is this with this process's own.
   */
  rateGateAs(model: ModelName, pacing: WorkerPacing): RateGate;
  /** The rate gates made so far (one per model), e.g. to release their queued callers on shutdown. */
  rateGates(): RateGate[];
  /** Created on first use: local-only runs never build one (nor load the AWS SDK). */
  s3(): Promise<S3Client>;
  /** Encodes shard files on a background thread. */
  shardEncoder: ShardEncoder;
  /** Aborts in-flight work of corpus jobs that stopped (cancel, failure, retry). */
  stopWatch: StopWatch;
  /** Removes the queued steps of a generation that stopped, once a step of it is met. */
  stoppedSteps: StoppedStepSweeper;
  /** A new connection for a BullMQ worker (workers need `maxRetriesPerRequest: null`). */
  workerConnection(): RedisClient;
  /** Takes the connection errors of an unreachable Redis from every connection here, and logs them in summary. */
  redisOutage: RedisOutageLog;
  close(): Promise<void>;
}

/** Where the settings say Redis is: `REDIS_URL`, or the seed nodes of `REDIS_CLUSTER_NODES`. */
export function redisTarget(settings: Pick<Settings, 'redisUrl' | 'redisClusterNodes'>): RedisTarget {
  return settings.redisClusterNodes ? { clusterNodes: settings.redisClusterNodes } : { url: settings.redisUrl };
}

/** A connection to the configured Redis or cluster; `maxRetriesPerRequest: null` unless told otherwise. */
export function redisConnection(settings: Pick<Settings, 'redisUrl' | 'redisClusterNodes'>, options: ConnectionOptions = {}): RedisClient {
  return createRedisClient(redisTarget(settings), options);
}

export interface ServicesOptions {
  /**
   * Commands give up on Redis instead of waiting for it (Default: false, the workers' patience):
   * each command fails after a few reconnection attempts rather than queueing forever.
   */
  failFast?: boolean;
  /**
   * Commands fail at once while Redis is unreachable instead of waiting for it, and the connection
   * keeps trying (Default: false). For the dashboard: its endpoints answered nothing for as long as
   * Redis was down, and then, failing after a reconnection attempt, up to 4 s late.
   */
  failWhileUnreachable?: boolean;
}

/** How long a command waits for Redis in all before saying it cannot reach it. */
export const COMMAND_REDIS_TIMEOUT_MS = 5_000;

export function createServices(settings: Readonly<Settings>, logger: Logger, options: ServicesOptions = {}): Services {
  const releasers: Array<() => Promise<unknown> | void> = [];
  const redis = redisConnection(
    settings,
    options.failFast
      ? // A Redis that keeps the connection but answers nothing (stopped, a network dropping packets)
        // fails each command after the same 5 s: `list` on a Redis that froze while it ran waited for good.
        { maxRetriesPerRequest: 1, connectTimeout: COMMAND_REDIS_TIMEOUT_MS, commandTimeoutMs: COMMAND_REDIS_TIMEOUT_MS, maxReconnects: 3 }
      : options.failWhileUnreachable
        ? { maxRetriesPerRequest: 1, connectTimeout: COMMAND_REDIS_TIMEOUT_MS, offlineQueue: false }
        : {},
  );
  releasers.push(() => redis.quit().catch(() => redis.disconnect()));
  const redisOutage = new RedisOutageLog(logger, describeRedisTarget(redisTarget(settings)));
  redisOutage.watch(redis);

  const queues = Object.fromEntries(
    [...QUEUE_NAMES, LEGACY_EMBED_QUEUE].map((name) => {
      const queue = new Queue(name, queueOptions(settings.redisPrefix, redis));
      queue.on('error', (error) => {
        // A command reports an unreachable Redis once, as REDIS_UNAVAILABLE; its queues' connection
        // errors (one per reconnection attempt, each with a stack) are only for debugging.
        if (options.failFast) logger.debug({ err: error, queue: name }, 'queue error');
        else if (!redisOutage.note(error)) logger.warn({ err: error, queue: name }, 'queue error');
      });
      releasers.push(() => queue.close());
      return [name, queue];
    }),
  ) as Services['queues'];

  const metrics = new MetricsRecorder(redis, settings.redisPrefix);
  const embeddings = instrumentEmbeddingClient(createDashScopeClient(settings.dashscope), metrics);
  releasers.push(() => embeddings.close());

  const shardEncoder = new ShardEncoder();
  releasers.push(() => shardEncoder.close());
  /**
   * One gate per model and pacing: a gate defines its scripts on the client, and the dashboard
   * reads the fleet's gates at every refresh and scrape (a new gate each time grew the client for
   * good). This process's own gates are those of its own pacing, as it publishes it.
   */
  const gates = new Map<string, RateGate>();
  const gateFor = (model: ModelName, pacing: WorkerPacing): RateGate => {
    const key = JSON.stringify([model, pacing.baseUrl, pacing.requestsPerMinute, pacing.tokensPerMinute, pacing.reserve, pacing.targetUtilization]);
    let gate = gates.get(key);
    if (!gate) {
      gate = new RateGate(
        redis,
        rateGateKey(settings.redisPrefix, model, pacing.baseUrl),
        {
          requestsPerMinute: modelLimit(pacing.requestsPerMinute, model) ?? MODELS[model].defaultRequestsPerMinute,
          tokensPerMinute: modelLimit(pacing.tokensPerMinute, model) ?? MODELS[model].defaultTokensPerMinute,
        },
        { targetUtilization: pacing.targetUtilization, reserve: pacing.reserve, learnedTtlMs: settings.dashscope.learnedLimitTtlMs },
      );
      gates.set(key, gate);
    }
    return gate;
  };
  const ownPacing = pacingOf(settings.dashscope);
  const ownGates = new Map<ModelName, RateGate>();
  let s3Client: Promise<S3Client> | undefined;
  const workerConnections: RedisClient[] = [];

  const corpora = new CorpusStore(redis, settings.redisPrefix, { jobRetentionMs: settings.jobRetentionMs });
  return {
    settings,
    logger,
    redis,
    corpora,
    stopWatch: new StopWatch(corpora.jobs, logger),
    stoppedSteps: new StoppedStepSweeper({ queues, redis, redisPrefix: settings.redisPrefix }),
    queues,
    embeddings,
    metrics,
    shardEncoder,
    redisOutage,
    rateGate(model) {
      // Looked up per batch: by model alone.
      let gate = ownGates.get(model);
      if (!gate) {
        gate = gateFor(model, ownPacing);
        ownGates.set(model, gate);
      }
      return gate;
    },
    rateGateAs: gateFor,
    rateGates() {
      return [...ownGates.values()];
    },
    s3() {
      if (!s3Client) {
        const client = loadS3Client(settings.s3);
        s3Client = client;
        releasers.push(async () => (await client).destroy());
      }
      return s3Client;
    },
    workerConnection() {
      const connection = redisConnection(settings);
      redisOutage.watch(connection);
      workerConnections.push(connection);
      return connection;
    },
    async close() {
      for (const connection of workerConnections) connection.disconnect();
      for (const release of releasers.reverse()) {
        try {
          await release();
        } catch (error) {
          logger.warn({ err: error }, 'release failed');
        }
      }
    },
  };
}
