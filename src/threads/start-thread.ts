import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** What a thread may be given besides its entry: its V8 heap limits. */
export type ThreadOptions = Pick<WorkerOptions, 'resourceLimits'>;

/**
 * Starts a worker thread from `<name>.js` beside the caller when it is compiled. Under tsx and
 * vitest the caller runs from its .ts source, and a thread does not inherit their loaders, so the
 * thread registers tsx itself before importing the .ts entry (development and tests only).
 */
export function startThread(compiled: URL, source: URL, options: ThreadOptions = {}): Worker {
  if (existsSync(fileURLToPath(compiled))) return new Worker(compiled, options);
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(source.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
