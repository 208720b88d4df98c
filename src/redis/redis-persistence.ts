import { Cluster } from 'ioredis';

import type { RedisClient } from './redis-client.js';

/**
 * Why a restart of this Redis would lose embedq's state, or undefined when it keeps an AOF (or
 * when CONFIG is refused, as managed Redis services do: their persistence is the provider's).
 * Without AOF or snapshots a restart loses every job record, lease, schedule and learned limit;
 * with snapshots only it goes back to the last one, minutes old.
 */
export async function redisPersistenceProblem(redis: RedisClient): Promise<string | undefined> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    const aof = /^aof_enabled:(\d)/m.exec(await node.info('persistence'))?.[1];
    if (aof !== '0') continue;
    const save = await node.config('GET', 'save').then(
      (reply) => (reply as string[])[1] ?? '',
      () => undefined,
    );
    if (save === undefined) return undefined;
    if (save.trim() === '') {
      return 'Redis keeps nothing on disk (appendonly no, no save points): a Redis restart loses every job, output lease and schedule; set appendonly yes (README "Redis settings embedq needs")';
    }
    return `Redis keeps snapshots only (save ${save}, appendonly no): a restart takes it back to its last snapshot (jobs, leases and schedules as they were then); set appendonly yes (README "Redis settings embedq needs")`;
  }
  return undefined;
}
