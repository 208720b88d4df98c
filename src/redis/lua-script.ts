import type { RedisClient } from './redis-client.js';

/**
 * A Lua script registered on a client: ioredis sends EVALSHA (the script body only once per
 * connection), where `eval` would resend a kilobyte of Lua with every call on a hot path.
 */
export type LuaScript = (keys: readonly (string | Buffer)[], ...args: Array<string | number | Buffer>) => Promise<unknown>;

let counter = 0;

export function defineLuaScript(redis: RedisClient, lua: string): LuaScript {
  const name = `embedqScript${(counter += 1)}`;
  redis.defineCommand(name, { lua });
  const command = (redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[name]!.bind(redis);
  // Without numberOfKeys in the definition, ioredis takes the key count as the first argument.
  return (keys, ...args) => command(keys.length, ...keys, ...args);
}
