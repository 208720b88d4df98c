import path from 'node:path';

import madge from 'madge';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Dependencies point one way: workers/ → jobs/ → src/; src/ imports neither; no cycles. */
describe('module dependencies', () => {
  it('point one way and form no cycle', async () => {
    const graph = await madge(['src', 'jobs', 'workers'].map((folder) => path.join(ROOT, folder)), {
      baseDir: ROOT,
      fileExtensions: ['ts'],
      tsConfig: path.join(ROOT, 'tsconfig.json'),
    });
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

/**
 * What `embedq worker` loads: every command is registered by workers/cli.ts, so a heavy module
 * imported statically by any command is loaded, and kept, by every worker. The dashboard (fastify,
 * Bull Board), the emulator, the demo's Parquet reader and the planner's previous-output reader
 * are ~30 MB of RSS a worker does not need; their commands load them when run.
 */
describe('the CLI entry', () => {
  it('loads no command-only module until its command runs', async () => {
    const graph = await madge(path.join(ROOT, 'workers/cli.ts'), {
      baseDir: ROOT,
      fileExtensions: ['ts'],
      tsConfig: path.join(ROOT, 'tsconfig.json'),
      detectiveOptions: { ts: { skipTypeImports: true, skipAsyncImports: true }, es6: { skipTypeImports: true, skipAsyncImports: true } },
    });
    const loaded = Object.keys(graph.obj());
    expect(loaded).toContain('workers/start-workers.ts');
    expect(loaded.filter((file) => ['workers/dashboard/server.ts', 'src/emulator/server.ts', 'src/shards/read-shard.ts', 'src/reuse/previous-index.ts', 'workers/commands/demo-run.ts'].includes(file))).toEqual([]);
  });
});
