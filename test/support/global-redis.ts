import 'vitest';
import type { TestProject } from 'vitest/node';

import { startPrivateRedis } from '../../src/redis/private-redis.js';

/** One private redis-server for the whole run; each test file uses its own key prefix. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = await startPrivateRedis();
  project.provide('redisUrl', redis.url);
  return () => redis.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}
