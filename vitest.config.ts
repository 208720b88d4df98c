import { defineConfig } from 'vitest/config';

/**
 * Files whose assertions are rates and delays measured against the emulator's limits: they run
 * first, beside each other only, so the rest of the suite's CPU does not starve the workers they
 * measure (beside 2 other busy files, the adaptive gate's first job settled at 58% of the limit).
 */
const MEASURED = [
  'test/integration/rate-gate.test.ts',
  'test/integration/adaptive-quota.test.ts',
  'test/integration/shared-account.test.ts',
  'test/integration/rate-limits.test.ts',
  'test/integration/job-fairness.test.ts',
];

export default defineConfig({
  test: {
    globalSetup: ['test/support/fresh-build.ts', 'test/support/global-redis.ts'],
    // A guard against hangs, not a bound any test asserts: the longest tests took 35-45 s with
    // three files at a time on 2 cores, and 60 s left them too little room on a slower machine.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: 'measured', include: MEASURED, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: 'rest',
          include: ['test/**/*.test.ts'],
          exclude: MEASURED,
          // Three at a time on 2 cores: the files mostly wait (on workers, ticks, backoffs and
          // outages), and with two the cores stood idle ~40% of a run (783 s of CPU in 650 s on a
          // 2-core AMD EPYC; three: 611-626 s a run). The busier cores failed two tests at first: one
          // looked for a log line after a fixed sleep (wait for what must happen with a deadline), one
          // read a schedule's tick log between two writes (now one transaction). Not isolated: each file
          // re-imported BullMQ, the AWS SDK and the sources in a fresh process (~70 s of CPU a run);
          // every file makes its own world (Redis key prefix, S3 server, emulator) anyway.
          maxWorkers: 3,
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
