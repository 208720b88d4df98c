import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/fresh-build.ts', 'test/support/global-redis.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests spawn worker processes and redis-server; 2 cores do not gain from more forks.
    maxWorkers: 2,
  },
});
