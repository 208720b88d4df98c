import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ConfigError } from '../../src/errors.js';

/** Marks a folder as the demo's, so a later run may clear what it wrote there. */
const DEMO_MARK = '.embedq-demo';
/** The demo's private Redis's working folder, inside the demo's folder. */
export const DEMO_REDIS_FOLDER = 'redis';
/** What the demo writes in its folder, removed at its next run. */
const DEMO_WRITES = ['corpus', 'output', DEMO_REDIS_FOLDER];
/** What a demo's folder may hold (an older demo left no mark). */
const DEMO_ENTRIES = new Set([...DEMO_WRITES, DEMO_MARK]);

/**
 * Makes `folder` ready for a run: what an earlier run wrote there (`corpus/`, `output/`, `redis/`) is removed.
 * A folder that holds anything else, and was not made by the demo, is refused: `--dir ~/data`
 * used to delete the whole folder.
 */
export async function prepareDemoFolder(folder: string): Promise<void> {
  const entries: string[] = await readdir(folder).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [];
    if (error.code === 'ENOTDIR') throw new ConfigError(`${folder} cannot be a folder: it, or a folder above it, is a file; choose a new or empty folder with --dir`);
    throw error;
  });
  if (!entries.includes(DEMO_MARK) && entries.some((entry) => !DEMO_ENTRIES.has(entry))) {
    throw new ConfigError(`${folder} is not empty and was not made by embedq demo, which clears its folder at each run; choose a new or empty one with --dir`);
  }
  for (const entry of DEMO_WRITES) await rm(join(folder, entry), { recursive: true, force: true });
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, DEMO_MARK), 'embedq demo writes corpus/, output/ and redis/ here, and removes them at its next run.\n');
}

/**
 * The demo's private Redis needs `redis-server`: when it is not on PATH, runs the project's
 * scripts/ensure-redis.sh (Debian's package when root with apt; otherwise it says what to install),
 * as the README's first command promises on a fresh machine.
 */
export async function ensureRedisServer(say: (line: string) => void): Promise<void> {
  if (onPath('redis-server')) return;
  const script = join(packageRoot(), 'scripts', 'ensure-redis.sh');
  say(`redis-server is not on PATH: running ${script}`);
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('bash', [script], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0 || !onPath('redis-server')) {
    throw new ConfigError('the demo needs redis-server on PATH (see the lines above), or run the pipeline against your own Redis with REDIS_URL');
  }
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, command)));
}

/** The folder holding package.json: two levels above this file in workers/, one above the bundle in dist/. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
