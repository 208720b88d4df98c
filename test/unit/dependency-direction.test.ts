import { readFile } from 'node:fs/promises';
import path from 'node:path';

import madge from 'madge';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Every module of src/, jobs/ and workers/, with its static and dynamic imports. */
const wholeGraph = () =>
  madge(['src', 'jobs', 'workers'].map((folder) => path.join(ROOT, folder)), {
    baseDir: ROOT,
    fileExtensions: ['ts'],
    tsConfig: path.join(ROOT, 'tsconfig.json'),
  });

/** Dependencies point one way: workers/ → jobs/ → src/; src/ imports neither; no cycles. */
describe('module dependencies', () => {
  it('point one way and form no cycle', async () => {
    const graph = await wholeGraph();
    const wrong: string[] = [];
    for (const [file, imports] of Object.entries(graph.obj())) {
      for (const imported of imports) {
        if (file.startsWith('src/') && (imported.startsWith('jobs/') || imported.startsWith('workers/'))) wrong.push(`${file} → ${imported}`);
        if (file.startsWith('jobs/') && imported.startsWith('workers/')) wrong.push(`${file} → ${imported}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(graph.circular()).toEqual([]);
  });
});

const staticGraph = async (entry: string): Promise<string[]> => {
  const graph = await madge(path.join(ROOT, entry), {
    baseDir: ROOT,
    fileExtensions: ['ts'],
    tsConfig: path.join(ROOT, 'tsconfig.json'),
    detectiveOptions: { ts: { skipTypeImports: true, skipAsyncImports: true }, es6: { skipTypeImports: true, skipAsyncImports: true } },
  });
  return Object.keys(graph.obj());
};

/**
 * What a command loads: workers/cli.ts loads only the module of the command it runs, and a
 * command's module imports statically only what the command needs. The dashboard (fastify, Bull
 * Board), the emulator, the demo's Parquet reader and the planner's previous-output reader are
 * ~30 MB of RSS a worker does not need, and every module loaded is start-up CPU for each
 * `embedq status` (tests spawn the CLI hundreds of times).
 */
describe('the CLI entry', () => {
  const commandOnly = ['workers/dashboard/server.ts', 'src/emulator/server.ts', 'src/shards/read-shard.ts', 'src/reuse/previous-index.ts', 'workers/commands/demo-run.ts'];

  it('loads no command module before it knows the command', async () => {
    expect((await staticGraph('workers/cli.ts')).sort()).toEqual(['src/errors.ts', 'workers/cli.ts']);
  });

  it("the worker's and the job commands' modules load no command-only module", async () => {
    const worker = await staticGraph('workers/commands/worker.ts');
    expect(worker).toContain('workers/start-workers.ts');
    expect(worker.filter((file) => commandOnly.includes(file))).toEqual([]);
    const jobs = await staticGraph('workers/commands/jobs.ts');
    expect(jobs).toContain('jobs/enqueue.ts');
    expect(jobs.filter((file) => [...commandOnly, 'workers/start-workers.ts'].includes(file))).toEqual([]);
  });

  it('loads the AWS SDK only in a process that opens an s3:// location, at its first use', async () => {
    // ~0.15 s of CPU at start: `status`, `list`, `cancel` and the schedule commands never need it.
    // s3-client.ts alone imports it as a value, and s3-store.ts reaches that module with import().
    for (const entry of ['workers/commands/jobs.ts', 'workers/commands/schedule.ts', 'workers/commands/worker.ts']) {
      expect(await staticGraph(entry)).not.toContain('src/storage/s3-client.ts');
    }
    const graph = await wholeGraph();
    const importers: string[] = [];
    for (const file of Object.keys(graph.obj())) {
      if (/^(import|export) (?!type )[^;]*from '@aws-sdk\//m.test(await readFile(path.join(ROOT, file), 'utf8'))) importers.push(file);
    }
    expect(importers).toEqual(['src/storage/s3-client.ts']);
  });

  it('imports zod as a namespace, which the bundle trims to what is used', async () => {
    // `import { z } from 'zod'` kept all of zod in the bundle (733 KB with every locale, against
    // ~190 KB): ~45 ms more CPU at every process's start.
    const named: string[] = [];
    for (const file of Object.keys((await wholeGraph()).obj())) {
      if (/^import \{[^}]*\bz\b[^}]*\} from 'zod'/m.test(await readFile(path.join(ROOT, file), 'utf8'))) named.push(file);
    }
    expect(named).toEqual([]);
  });
});
