import { resolve } from 'node:path';

import type { Command } from 'commander';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run the whole pipeline on embedded defaults: private Redis, local folders, the emulator unless DASHSCOPE_API_KEY is set')
    .option('--dir <folder>', 'where the sample corpus and the output go', '.embedq/demo')
    .action(async (flags: { dir: string }) => {
      // Loaded when run: the demo brings the emulator, a Parquet reader and a private Redis, which
      // every other command (a worker above all) would otherwise load and keep for nothing.
      const { runDemo } = await import('./demo-run.js');
      await runDemo(resolve(flags.dir));
    });
}
