import { Redis } from 'ioredis';

import type { PrivateRedis } from '../../src/redis/private-redis.js';

/**
 * Stops a private Redis's process (SIGSTOP) as a hung host, a swapping server or a network that
 * drops packets would: its connections stay open and nothing answers. Returns what resumes it
 * (SIGCONT); call it before `stop()`, which a stopped process does not act on.
 */
export async function freezeRedis(redis: PrivateRedis): Promise<() => void> {
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  let pid: number;
  try {
    pid = Number(/^process_id:(\d+)/m.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no process_id in INFO server of ${redis.url}`);
  process.kill(pid, 'SIGSTOP');
  let thawed = false;
  return () => {
    if (thawed) return;
    thawed = true;
    process.kill(pid, 'SIGCONT');
  };
}
