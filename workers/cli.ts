#!/usr/bin/env node
import { Command, CommanderError } from 'commander';

import { emulatorCommand } from '../src/cli/emulator-command.js';
import { EmbedqError } from '../src/errors.js';
import { registerDashboardCommand } from './commands/dashboard.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerPlanCommand } from './commands/plan.js';
import { registerScheduleCommands } from './commands/schedule.js';
import { registerWorkerCommand } from './commands/worker.js';

/**
 * The `embedq` command. It is a process entrypoint like the workers, so it lives in workers/ and
 * dependencies keep pointing one way (workers → jobs → src).
 */
const program = new Command('embedq')
  .description('Batch embeddings with Alibaba Cloud Model Studio (DashScope) on BullMQ/Redis')
  .showHelpAfterError()
  .exitOverride();

registerJobCommands(program);
registerWorkerCommand(program);
registerPlanCommand(program);
registerScheduleCommands(program);
registerDemoCommand(program);
registerDashboardCommand(program);
program.addCommand(emulatorCommand());

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode;
  } else if (error instanceof EmbedqError && !error.retryable) {
    // Configuration and input problems: the message lists every problem; no stack needed.
    process.stderr.write(`embedq: ${error.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`embedq: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  }
}
