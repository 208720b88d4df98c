import type { Command } from 'commander';

import { cancelCorpusJob, retryCorpusJob, submitCorpusJob } from '../../jobs/enqueue.js';
import { JobLostError } from '../../jobs/job-errors.js';
import { assertInputExists } from '../../src/corpus/list-corpus.js';
import { ConfigError } from '../../src/errors.js';
import type { JobOptions } from '../../src/job-options.js';
import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { describeGateState } from '../../src/rate/describe-gate.js';
import { pacingDisagreement } from '../../src/rate/fleet-pacing.js';
import { readRedisMemory, redisMemoryProblem } from '../../src/redis/redis-memory.js';
import { QUEUES } from '../../jobs/queues.js';
import { describePacedBy, readFleetGate } from '../fleet-gate.js';
import { describeOrphanedSteps, orphanedSteps } from '../orphaned-steps.js';
import type { Services } from '../services.js';
import { settleStopped } from '../settle-stopped.js';
import { withServices } from './context.js';
import { addJobFlags, jobOptionsFromFlags } from './job-flags.js';
import { describeJob, progressLine } from './progress.js';
import { waitForEnd } from './watch.js';

/** Fails early, before anything is queued, when the input names nothing. */
function checkInputExists(services: Services, options: JobOptions): Promise<void> {
  return assertInputExists(options.input, { s3Client: options.input.startsWith('s3://') ? services.s3() : undefined, output: options.output });
}

export function registerJobCommands(program: Command): void {
  addJobFlags(
    program
      .command('submit <input>')
      .description('record a corpus job and print its id; workers do the rest')
      .option('--wait', 'show progress until the job ends; exit 0 only on success')
      .option('--overwrite', "remove an earlier run's files from the output first (without it, a non-empty output is refused)")
      .option('--reuse <previous-output>', 'take the vectors of unchanged lines from a previous output (or a schedule root) instead of embedding them again'),
    { requireOut: true },
  ).action(async (input: string, flags: Record<string, unknown>) => {
    const options = jobOptionsFromFlags(input, flags);
    process.exitCode = await withServices(async (services) => {
      await checkInputExists(services, options);
      const id = await submitCorpusJob(
        { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() },
        options,
        { overwrite: flags.overwrite === true },
      );
      process.stdout.write(`${id}\n`);
      return flags.wait ? waitForEnd(services, id) : 0;
    });
  });

  program
    .command('status <jobId>')
    .description("show a corpus job's state and counts")
    .option('--json', 'print JSON')
    .action(async (jobId: string, flags: { json?: boolean }) => {
      process.exitCode = await withServices(async (services) => {
        const record = await services.corpora.get(jobId);
        if (!record) throw new JobLostError(jobId);
        // "retrying … (4 s ago)" by Redis's clock, as the note was stamped: this shell's may be off.
        process.stdout.write(flags.json ? `${JSON.stringify(record, null, 2)}\n` : `${describeJob(record, await services.corpora.now())}\n`);
        if (flags.json) return 0;
        // A job that does not move may be waiting on a full Redis: say so where the operator looks.
        const redisProblem = redisMemoryProblem(await readRedisMemory(services.redis));
        if (redisProblem) process.stdout.write(`redis     ${redisProblem}\n`);
        const workers = await liveWorkers(services.redis, services.settings.redisPrefix);
        // A job that waits on no one: nothing else says that no worker is running.
        if (workers.length === 0 && (record.state === 'queued' || record.state === 'running')) {
          process.stdout.write('workers   none live (no heartbeat in the last 20 s): the job waits until an `embedq worker` runs\n');
        }
        const orphaned = record.state === 'running' ? await orphanedSteps(services, jobId) : 0;
        if (orphaned > 0) process.stdout.write(`stalled   ${describeOrphanedSteps(orphaned)}\n`);
        const gate = await readFleetGate(services, record.options.model, workers);
        process.stdout.write(`${describeGateState(gate.state, record.options.model)}; ${describePacedBy(gate.pacedBy, 'this shell')}\n`);
        const fleetProblem = pacingDisagreement(workers);
        if (fleetProblem) process.stdout.write(`fleet     ${fleetProblem}\n`);
        return 0;
      });
    });

  program
    .command('list')
    .description('list corpus jobs, newest first')
    .option('--json', 'print JSON')
    .option('--limit <n>', 'how many', '50')
    .action(async (flags: { json?: boolean; limit: string }) => {
      const limit = Number(flags.limit);
      // 0 and -1 reached ZREVRANGE as "every job" and "all but the oldest"; 1.5 as a Redis error.
      if (!(Number.isSafeInteger(limit) && limit > 0)) throw new ConfigError(`Invalid options:\n- limit: must be a whole number above 0, got "${flags.limit}"`);
      await withServices(async (services) => {
        const records = await services.corpora.list(limit);
        if (flags.json) process.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
        else for (const record of records) process.stdout.write(`${record.id}  ${progressLine(record)}  ${record.options.model}  ${record.options.input} → ${record.options.output}\n`);
      });
    });

  program
    .command('cancel <jobId>')
    .description('stop a queued or running corpus job; waits (up to 5 s) until its requests in flight have stopped')
    .action(async (jobId: string) => {
      process.exitCode = await withServices(async (services) => {
        const result = await cancelCorpusJob(services.corpora, jobId);
        if (!result.cancelled) {
          process.stderr.write(`cannot cancel ${jobId}: ${result.message}\n`);
          return 1;
        }
        const settled = await settleStopped(services, jobId);
        process.stderr.write(
          settled ? `cancelled ${jobId}\n` : `cancelled ${jobId}; some of its steps are still finishing: its output stays leased for a minute, so no new run gets a file they are still writing\n`,
        );
        return 0;
      });
    });

  program
    .command('retry <jobId>')
    .description('resume a failed or cancelled corpus job; written shards still in the output are kept')
    .action(async (jobId: string) => {
      process.exitCode = await withServices(async (services) => {
        const result = await retryCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() }, jobId);
        if (!result.retried) {
          process.stderr.write(`cannot retry ${jobId}: ${result.message}\n`);
          return 1;
        }
        const gone = result.rewritten.length > 0 ? `; written shards gone from the output, to be written again: ${result.rewritten.join(', ')}` : '';
        process.stderr.write(`retrying ${jobId} (generation ${result.generation})${gone}\n`);
        return 0;
      });
    });
}
