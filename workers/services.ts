import type { S3Client } from '@aws-sdk/client-s3';
import { Queue } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';

import { CorpusStore } from '../jobs/corpus-store.js';
import { QUEUES, queueOptions, type QueueName } from '../jobs/queues.js';
import type { Settings } from '../src/config.js';
import { createDashScopeClient } from '../src/dashscope/dashscope-client.js';
import type { EmbeddingClient } from '../src/embedding.js';
import type { Logger } from '../src/logger.js';
import { MODELS, type ModelName } from '../src/models.js';
import { RateGate, rateGateKey } from '../src/rate/rate-gate.js';
import { ShardEncoder } from '../src/shards/shard-encoder.js';
import { createS3Client } from '../src/storage/s3-store.js';

/**
 * The composition root: the only place that creates clients. Everything else receives them.
 * Resources are released last-in, first-out.
 */
export interface Services {
  settings: Readonly<Settings>;
  logger: Logger;
  /** Commands and scripts (not BullMQ's blocking connections). */
  redis: Redis;
  corpora: CorpusStore;
  queues: Record<QueueName, Queue>;
  embeddings: EmbeddingClient;
  /** The shared rate gate of a model (DashScope limits per model and account). */
  rateGate(model: ModelName): RateGate;
  /** Created on first use: local-only runs never build one. */
  s3(): S3Client;
  /** Encodes shard files on a background thread. */
  shardEncoder: ShardEncoder;
  /** A new connection for a BullMQ worker (workers need `maxRetriesPerRequest: null`). */
  workerConnection(): Redis;
  close(): Promise<void>;
}

export function redisConnection(url: string, options: RedisOptions = {}): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null, ...options });
  // ioredis reconnects by itself; without a listener an error event would crash the process.
  redis.on('error', () => undefined);
  return redis;
}

export function createServices(settings: Readonly<Settings>, logger: Logger): Services {
  const releasers: Array<() => Promise<unknown> | void> = [];
  const redis = redisConnection(settings.redisUrl);
  releasers.push(() => redis.quit().catch(() => redis.disconnect()));

  const queues = Object.fromEntries(
    Object.values(QUEUES).map((name) => {
      const queue = new Queue(name, queueOptions(settings.redisPrefix, redis));
      queue.on('error', (error) => logger.warn({ err: error, queue: name }, 'queue error'));
      releasers.push(() => queue.close());
      return [name, queue];
    }),
  ) as Record<QueueName, Queue>;

  const embeddings = createDashScopeClient(settings.dashscope);
  releasers.push(() => embeddings.close());

  const shardEncoder = new ShardEncoder();
  releasers.push(() => shardEncoder.close());
  const gates = new Map<ModelName, RateGate>();
  let s3Client: S3Client | undefined;
  const workerConnections: Redis[] = [];

  return {
    settings,
    logger,
    redis,
    corpora: new CorpusStore(redis, settings.redisPrefix),
    queues,
    embeddings,
    shardEncoder,
    rateGate(model) {
      let gate = gates.get(model);
      if (!gate) {
        gate = new RateGate(
          redis,
          rateGateKey(settings.redisPrefix, model, settings.dashscope.baseUrl),
          {
            requestsPerMinute: settings.dashscope.requestsPerMinute ?? MODELS[model].defaultRequestsPerMinute,
            tokensPerMinute: settings.dashscope.tokensPerMinute ?? MODELS[model].defaultTokensPerMinute,
          },
          {
            targetUtilization: settings.dashscope.targetUtilization,
            reserve: settings.dashscope.reserve,
            learnedTtlMs: settings.dashscope.learnedLimitTtlMs,
          },
        );
        gates.set(model, gate);
      }
      return gate;
    },
    s3() {
      if (!s3Client) {
        const client = createS3Client(settings.s3);
        s3Client = client;
        releasers.push(() => client.destroy());
      }
      return s3Client;
    },
    workerConnection() {
      const connection = redisConnection(settings.redisUrl);
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
