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
