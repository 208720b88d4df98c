import path from 'node:path';

import { Option, type Command } from 'commander';

import { QUEUES } from '../../jobs/queues.js';
import { runSchedule } from '../../jobs/schedule-run.js';
import { nextTick, removeScheduler, type ScheduleDefinition } from '../../jobs/schedule-store.js';
import { listSchedules } from '../schedule-list.js';
import { assertInputExists } from '../../src/corpus/list-corpus.js';
import { addSchedule, applySchedules, checkScheduleShape, exportSchedules, readScheduleFile } from '../schedule-file.js';
import { scheduleRunDeps, scheduleStore } from '../schedule-tick.js';
import type { Services } from '../services.js';
import { withServices } from './context.js';
import { addJobFlags, jobOptionsFromFlags } from './job-flags.js';
import { waitForEnd } from './watch.js';

/** `schedule run` refused because the schedule's previous run is still going: EX_TEMPFAIL (sysexits.h), try again later. */
const EXIT_PREVIOUS_RUN_ACTIVE = 75;

/** `embedq schedule add|list|remove|run` (DESIGN "Contract"), and `export|apply` (a schedules file). */

function absoluteTemplate(template: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(template) ? template : path.resolve(template);
}

/** Everything `add` checks before touching Redis; every problem is a ConfigError (exit code 2). */
export function scheduleFromFlags(name: string, input: string, flags: Record<string, unknown>): ScheduleDefinition {
  const tz = String(flags.tz);
  const out = absoluteTemplate(String(flags.out));
  const incremental = flags.incremental === true;
  // Validate the options as a run would see them, with a sample output in place of the template.
  const sample = checkScheduleShape({ name, cron: String(flags.cron), tz, out, incremental });
  const { input: absoluteInput, output: _output, ...options } = jobOptionsFromFlags(input, { ...flags, out: sample });
  return { name, cron: String(flags.cron), tz, input: absoluteInput, out, options, incremental, onOverlap: flags.onOverlap === 'queue' ? 'queue' : 'skip' };
}

export function registerScheduleCommands(program: Command): void {
  const schedule = program
    .command('schedule')
    .description('cron-scheduled runs (BullMQ Job Schedulers): add, list, pause, resume, remove, run, export, apply');

  addJobFlags(
    schedule
      .command('add <name> <input>')
      .description('create or update a schedule; --out is a template: {date} {time} {runId}')
      .requiredOption('--cron <expr>', 'cron pattern: 5 fields, or 6 with seconds first')
      .option('--tz <zone>', 'IANA time zone of the pattern and of {date}/{time}', 'UTC')
      .option('--incremental', 'reuse the last good run (--reuse <schedule root>)')
      .addOption(new Option('--on-overlap <policy>', 'a tick while the previous run is still going').choices(['skip', 'queue']).default('skip')),
    { requireOut: true },
  ).action(async (name: string, input: string, flags: Record<string, unknown>) => {
    const definition = scheduleFromFlags(name, input, flags);
    await withServices(async (services) => {
      await assertInputExists(definition.input, { s3Client: definition.input.startsWith('s3://') ? services.s3() : undefined });
      const store = scheduleStore(services);
      const { updated } = await addSchedule(services, definition);
      const next = await nextTick(services.queues[QUEUES.schedule], name);
      // An update keeps a pause: its ticks start no run until `schedule resume`.
      const pausedAt = (await store.get(name))?.pausedAt ?? null;
      const nextRun = pausedAt !== null ? `none (paused since ${new Date(pausedAt).toISOString()})` : next ? new Date(next).toISOString() : 'none';
      process.stdout.write(`${updated ? 'updated' : 'added'} schedule ${name}; next run ${nextRun}\n`);
    });
  });

  schedule
    .command('list')
    .description('schedules with next run, last run, skipped and missed ticks and the last error')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      await withServices(async (services) => {
        const rows = await listSchedules(services);
        if (flags.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        for (const row of rows) {
          const last = row.last_run ? `${row.last_run.job_id} ${row.last_run.state} → ${row.last_run.output}` : 'never';
          process.stdout.write(
            `${row.name}  "${row.cron}" ${row.tz}  ${row.input} → ${row.out}\n` +
              `  next ${row.paused_at ? `none (paused since ${row.paused_at})` : (row.next_run ?? 'none')}  last ${last}  runs ${row.runs}  skipped ${row.skipped}  missed ${row.missed}  failures ${row.failures}\n` +
              (row.last_error ? `  error: ${row.last_error}\n` : ''),
          );
        }
      });
    });

  schedule
    .command('export')
    .description('print every schedule as a schedules file (JSON) for `schedule apply` and EMBEDQ_SCHEDULES_FILE')
    .action(async () => {
      await withServices(async (services) => {
        const { file, refused } = await exportSchedules(services);
        process.stdout.write(file);
        // Still written whole: the file is what Redis holds. Said, or it failed only at the restore.
        if (refused) {
          process.stderr.write(
            `embedq: warning: schedule apply and a worker's EMBEDQ_SCHEDULES_FILE refuse this file as it stands (an older version let these in):\n${refused}\nAdd each such schedule again as this version takes it (another name, other options), remove the old one, and export again.\n`,
          );
        }
      });
    });

  schedule
    .command('apply <file>')
    .description('create or update the schedules a schedules file names (as `add` does); --prune removes the others')
    .option('--prune', 'remove schedules the file does not name')
    .action(async (file: string, flags: { prune?: boolean }) => {
      const definitions = await readScheduleFile(file);
      await withServices(async (services) => {
        const outcomes = await applySchedules(services, definitions, flags.prune === true);
        for (const [name, outcome] of outcomes) process.stdout.write(`${outcome} schedule ${name}\n`);
      });
    });

  schedule
    .command('remove <name>')
    .description('delete a schedule (its outputs and running job are left alone)')
    .action(async (name: string) => {
      process.exitCode = await withServices(async (services) => {
        // The record first: a worker's check that finds a record without its Job Scheduler installs
        // one again (restoreLostSchedules), so the scheduler goes only once no record says it should be.
        const removed = await scheduleStore(services).remove(name);
        await removeScheduler(services.queues[QUEUES.schedule], name);
        process.stderr.write(removed ? `removed schedule ${name}\n` : `no schedule ${name}\n`);
        return removed ? 0 : 1;
      });
    });

  schedule
    .command('pause <name>')
    .description('hold the ticks: none starts a run until `schedule resume` (a run going on goes on; `schedule run` still runs)')
    .action(async (name: string) => {
      process.exitCode = await withServices(async (services) => {
        const result = await scheduleStore(services).setPaused(name, true);
        if (result === 'missing') process.stderr.write(`no schedule ${name}\n`);
        else process.stderr.write(result === 'changed' ? `paused schedule ${name}\n` : `schedule ${name} was already paused\n`);
        return result === 'missing' ? 1 : 0;
      });
    });

  schedule
    .command('resume <name>')
    .description('let a paused schedule tick again; the ticks it held are not made up')
    .action(async (name: string) => {
      process.exitCode = await withServices(async (services) => {
        const result = await scheduleStore(services).setPaused(name, false);
        if (result === 'missing') {
          process.stderr.write(`no schedule ${name}\n`);
          return 1;
        }
        const next = await nextTick(services.queues[QUEUES.schedule], name);
        const nextRun = `next run ${next ? new Date(next).toISOString() : 'none'}`;
        process.stderr.write(result === 'changed' ? `resumed schedule ${name}; ${nextRun}\n` : `schedule ${name} was not paused; ${nextRun}\n`);
        return 0;
      });
    });

  schedule
    .command('run <name>')
    .description('one run now, the same path as a tick; prints the corpus job id')
    .option('--wait', 'show progress until the job ends; exit 0 only on success')
    .addHelpText('after', `\nExit codes: 0 started (with --wait: completed), 1 failed or not started, ${EXIT_PREVIOUS_RUN_ACTIVE} not started because the previous run is still going.`)
    .action(async (name: string, flags: { wait?: boolean }) => {
      process.exitCode = await withServices(async (services) => {
        // An explicit run starts even while the schedule is paused (pause holds the ticks).
        // Its time by Redis's clock, which names the output ({date}, {time}) as a tick's would.
        const outcome = await runSchedule(scheduleRunDeps(services), name, await services.corpora.now(), 'run');
        if (outcome.kind === 'missing') process.stderr.write(`no schedule ${name}\n`);
        if (outcome.kind === 'busy' && outcome.ending) process.stderr.write(`schedule ${name}: run ${outcome.activeJobId} stopped moments ago and a step of it may still be writing the output; not started (try again within a minute)\n`);
        else if (outcome.kind === 'busy') process.stderr.write(`schedule ${name}: previous run ${outcome.activeJobId} is still active; not started\n`);
        if (outcome.kind === 'failed') process.stderr.write(`schedule ${name}: ${outcome.error}\n`);
        // Not started because a run is going: a cron wrapper tells it from a failure by the code.
        if (outcome.kind === 'busy') return EXIT_PREVIOUS_RUN_ACTIVE;
        if (outcome.kind !== 'submitted') return 1;
        process.stdout.write(`${outcome.jobId}\n`);
        return flags.wait ? waitForEnd(services, outcome.jobId) : 0;
      });
    });
}
