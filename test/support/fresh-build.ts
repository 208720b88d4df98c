import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SOURCES = ['src', 'jobs', 'workers', 'scripts/build.mjs', 'package.json', 'package-lock.json'];
const BUILT_CLI = path.join(ROOT, 'dist/cli.js');
/** The CLI users run (`embedq`, the image's entrypoint): it loads dist/. */
export const EMBEDQ_BIN = path.join(ROOT, 'bin/embedq.js');

/**
 * Tests run the CLI as users do, compiled (`bin/embedq.js`, which loads dist/): through tsx each
 * of the suite's ~300 CLI processes cost about a second more CPU. So before any test runs, dist/
 * must not be older than the sources it is built from: rebuilt here when it is (a developer's
 * edit, then `npx vitest run …`), skipped when it is not (`npm install` has just built it).
 */
export default function setup(): void {
  if (builtAt() >= newestSource()) return;
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: 'inherit' });
}

function builtAt(): number {
  try {
    return statSync(BUILT_CLI).mtimeMs;
  } catch {
    return 0;
  }
}

function newestSource(): number {
  let newest = 0;
  const visit = (entry: string): void => {
    const stat = statSync(entry);
    if (stat.isDirectory()) for (const child of readdirSync(entry)) visit(path.join(entry, child));
    else newest = Math.max(newest, stat.mtimeMs);
  };
  for (const source of SOURCES) visit(path.join(ROOT, source));
  return newest;
}
