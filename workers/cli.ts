#!/usr/bin/env node
import { Command, CommanderError } from 'commander';

import { EmbedqError } from '../src/errors.js';

/**
 * The `embedq` command. It is a process entrypoint like the workers, so it lives in workers/ and
 * dependencies keep pointing one way (workers → jobs → src).
 */
const program = new Command('embedq')
  .description('Batch embeddings with Alibaba Cloud Model Studio (DashScope) on BullMQ/Redis')
  .showHelpAfterError()
  .exitOverride();

type Register = (program: Command) => void;

/**
 * The commands, in the order `embedq --help` lists them, each with the module that defines it.
 * Only the module of the command being run is loaded: each brings its own libraries (the dashboard
 * fastify, the schedules cron-parser, the emulator its server), and loading them all cost every
 * `embedq status` and every worker ~0.3 s of CPU at start, and the emulator ~0.7 s.
 */
const COMMANDS: ReadonlyArray<{ names: readonly string[]; load: () => Promise<Register> }> = [
  { names: ['submit', 'status', 'list', 'cancel', 'retry'], load: async () => (await import('./commands/jobs.js')).registerJobCommands },
  { names: ['worker'], load: async () => (await import('./commands/worker.js')).registerWorkerCommand },
  { names: ['plan'], load: async () => (await import('./commands/plan.js')).registerPlanCommand },
  { names: ['schedule'], load: async () => (await import('./commands/schedule.js')).registerScheduleCommands },
  { names: ['demo'], load: async () => (await import('./commands/demo.js')).registerDemoCommand },
  { names: ['dashboard'], load: async () => (await import('./commands/dashboard.js')).registerDashboardCommand },
  {
    names: ['emulator'],
    // Built on its own (src/emulator), so it takes the program's usage-and-exit-2 handling explicitly.
    load: async () => {
      const { emulatorCommand } = await import('./commands/emulator.js');
      return (program) => program.addCommand(emulatorCommand().showHelpAfterError().exitOverride());
    },
  },
];

// BullMQ only packs with msgpackr (its JavaScript encoder); the native addon msgpackr loads at import
// speeds up unpacking, which nothing here does, and loading it cost every process ~30 ms of CPU.
// Read when msgpackr is imported, so set before a command's modules load.
process.env.MSGPACKR_NATIVE_ACCELERATION_DISABLED ??= 'true';

// `embedq --help`, `embedq help <command>` and a misspelt command (commander suggests the nearest) see them all.
const named = COMMANDS.find((command) => command.names.includes(process.argv[2] ?? ''));
for (const command of named ? [named] : COMMANDS) (await command.load())(program);

// The AWS SDK prints a seven-line notice to stderr at its first S3 client, that its releases after
// January 2027 need Node 22: in every command's output and between the workers' JSON log lines.
// The lockfile pins a release that supports Node 20. Set the variable to "false" to see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// BullMQ prints "IMPORTANT! Eviction policy is …" to stderr for every connection it opens (4 per
// command, ~12 per worker), between the workers' JSON lines, also when Redis has no maxmemory and so
// evicts nothing. embedq says it once where it matters (the worker's log at start, `status`, the
// dashboard; src/redis/redis-memory.ts), with what to do.
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]): void => {
  if (typeof args[0] === 'string' && args[0].startsWith('IMPORTANT! Eviction policy is')) return;
  warn(...args);
};

const debug = process.env.LOG_LEVEL === 'debug' || process.env.LOG_LEVEL === 'trace';

// A reader that went away (`embedq status <id> | grep -q running`, `embedq list | head -3`) is not
// a failure: exit as a pipeline's writer does (128 + SIGPIPE), not with an unhandled EPIPE's stack.
// A command with its own handler (the demo stops what it started first) takes it over.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  if (process.stdout.listenerCount('error') === 1) process.exit(141);
});

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Commander has printed the problem and the usage. A command line it refuses (an unknown flag,
    // a value outside a flag's choices, a missing argument) exits 2, as bad options do.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else if (error instanceof EmbedqError) {
    // Expected failures: a code and a message (configuration problems list every one); the stack
    // only with LOG_LEVEL=debug. Refused input or options exit 2, the rest 1.
    process.stderr.write(`embedq: ${error.code}: ${error.message}\n`);
    if (debug) process.stderr.write(`${error.stack ?? ''}\n`);
    process.exitCode = error.retryable ? 1 : 2;
  } else {
    const text = error instanceof Error ? (debug ? (error.stack ?? error.message) : error.message) : String(error);
    process.stderr.write(`embedq: INTERNAL: ${text}${debug ? '' : ' (LOG_LEVEL=debug shows the stack)'}\n`);
    process.exitCode = 1;
  }
  // A command that has said what went wrong exits with its code: a connection, timer or thread
  // that did not close (a Redis that answers nothing never answers QUIT) held the process for good.
  // Not at once: what it wrote to a pipe (asynchronous on macOS) gets a moment to drain; the timer
  // does not itself keep the process alive.
  setTimeout(() => process.exit(), 500).unref();
}
