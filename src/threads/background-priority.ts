import { readlinkSync } from 'node:fs';
import os from 'node:os';

/** How much lower than the process a background thread runs (nice steps; 10 ≈ a tenth of the CPU share under contention). */
export const BACKGROUND_NICE_STEPS = 10;

/**
 * Lowers the CPU priority of the calling thread only (Linux; elsewhere a no-op), and returns its
 * new nice value, or undefined when it could not be changed.
 *
 * Shard encoding and long-line token counts are batch work; the main thread must send requests on
 * their rate-gate slots. On a busy machine an encoding thread at the same priority starved the
 * main threads for 100-200 ms at a time, and every slot a caller woke up late for was lost (told
 * the right quota, 5-15% of it). On Linux, setpriority with a thread id changes just that thread.
 */
export function lowerThisThreadPriority(): number | undefined {
  const tid = osThreadId();
  if (tid === undefined) return undefined;
  try {
    const nice = Math.min(19, os.getPriority(tid) + BACKGROUND_NICE_STEPS);
    os.setPriority(tid, nice);
    return nice;
  } catch {
    // A container that forbids it, or an unusual /proc: the thread just keeps the process's priority.
    return undefined;
  }
}

/**
 * The calling thread's id as the OS knows it (Linux; elsewhere undefined): the `<tid>` of
 * /proc/<pid>/task/<tid>, where its CPU time can be read (`top -H`, the bench).
 */
export function osThreadId(): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
    return Number.isInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}
