import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';

import { describe, expect, it } from 'vitest';

import { BACKGROUND_NICE_STEPS } from '../../src/threads/background-priority.js';

/** Field 19 of /proc/<pid>/task/<tid>/stat: the thread's nice value. */
const niceOf = (statPath: string): number => Number(readFileSync(statPath, 'utf8').split(') ')[1]!.split(' ')[16]);

describe.skipIf(process.platform !== 'linux')('lowerThisThreadPriority', () => {
  it('lowers the calling thread only, not the process it runs in', async () => {
    const module = new URL('../../src/threads/background-priority.ts', import.meta.url).href;
    const tsx = import.meta.resolve('tsx/esm/api');
    // The thread lowers itself and reports its own nice value, read from /proc as the kernel sees it.
    const source = `
      const { parentPort } = await import('node:worker_threads');
      const { readFileSync, readlinkSync } = await import('node:fs');
      (await import(${JSON.stringify(tsx)})).register();
      const { lowerThisThreadPriority } = await import(${JSON.stringify(module)});
      const returned = lowerThisThreadPriority();
      const stat = readFileSync('/proc/' + readlinkSync('/proc/thread-self') + '/stat', 'utf8');
      parentPort.postMessage({ returned, nice: Number(stat.split(') ')[1].split(' ')[16]) });`;
    const worker = new Worker(`import(${JSON.stringify(`data:text/javascript,${encodeURIComponent(source)}`)})`, { eval: true });
    const report = await new Promise<{ returned: number | undefined; nice: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    const processNice = os.getPriority();
    expect(report.returned).toBe(Math.min(19, processNice + BACKGROUND_NICE_STEPS));
    expect(report.nice).toBe(report.returned);
    // The main thread keeps its priority.
    expect(niceOf(`/proc/${process.pid}/task/${process.pid}/stat`)).toBe(processNice);
  });
});
