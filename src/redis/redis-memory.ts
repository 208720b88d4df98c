import { Cluster } from 'ioredis';

import type { RedisClient } from './redis-client.js';

/** What `INFO memory` says of the Redis holding embedq's keys (on a cluster: the fullest primary). */
export interface RedisMemory {
  usedBytes: number;
  /** `maxmemory`; 0 means no limit. */
  maxBytes: number;
  /** `maxmemory-policy`. */
  policy: string;
}

/** Past this share of maxmemory, operators are warned before writes are refused. */
const NEARLY_FULL = 0.9;

/**
 * Redis's reply to a write once it is at maxmemory under `noeviction`: "OOM command not allowed
 * when used memory > 'maxmemory'". Not a connection error, so BullMQ's workers retry it at once,
 * in a loop, without a pause.
 */
export function isRedisFullError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('OOM ');
}

/** INFO is a read, so it answers on a full Redis too. */
export async function readRedisMemory(redis: RedisClient): Promise<RedisMemory> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  // A cluster not connected yet knows no master: ask it (the command waits for it, or fails).
  const memories = await Promise.all((nodes.length > 0 ? nodes : [redis]).map(async (node) => parseInfoMemory(await node.info('memory'))));
  return memories.reduce((fullest, memory) => (share(memory) > share(fullest) ? memory : fullest));
}

export function parseInfoMemory(info: string): RedisMemory {
  const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
  return { usedBytes: Number(field('used_memory') ?? 0), maxBytes: Number(field('maxmemory') ?? 0), policy: field('maxmemory_policy') ?? 'unknown' };
}

/**
 * What an operator must know, or undefined when all is well: Redis full (writes refused, so no job
 * moves), nearly full, or an eviction policy that would drop job records and locks when it fills.
 * `refusedWrite`: Redis has just answered a write with OOM, so it is full whatever INFO reads a
 * moment later (the refused command's own memory is freed by then, and used_memory can dip below
 * maxmemory).
 */
export function redisMemoryProblem(memory: RedisMemory, { refusedWrite = false } = {}): string | undefined {
  const { usedBytes, maxBytes, policy } = memory;
  if (maxBytes === 0 && !refusedWrite) return undefined;
  const usage = `${megabytes(usedBytes)} used of maxmemory ${megabytes(maxBytes)}`;
  const full = `Redis is full (${usage}): it refuses writes, so no job makes progress; raise maxmemory or free memory, and the jobs go on by themselves`;
  if (refusedWrite) return full;
  if (policy !== 'noeviction') {
    return `maxmemory-policy is ${policy} (${usage}): once full, Redis evicts keys, and an evicted job record or lock breaks a run; set maxmemory-policy noeviction`;
  }
  if (usedBytes >= maxBytes) return full;
  if (usedBytes >= maxBytes * NEARLY_FULL) {
    return `Redis is nearly full (${usage}): when full it refuses writes and jobs stop; raise maxmemory, or lower EMBEDQ_MAX_OPEN_SHARDS or --shard-rows (what each running job holds)`;
  }
  return undefined;
}

const share = (memory: RedisMemory): number => (memory.maxBytes > 0 ? memory.usedBytes / memory.maxBytes : 0);
const megabytes = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
