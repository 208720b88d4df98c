import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

import type { EmulatorStats } from '../src/emulator/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLOCK_TICKS_PER_SECOND = 100; // Linux USER_HZ

export interface WorkerProcess {
  child: ChildProcess;
  /** The worker's `memory` lines (every 5 s). */
  memory: Array<Record<string, number>>;
  /** The gate's cuts, nudges, dips and restores this worker reported (`rate limit learned`/`confirmed`/`lowered`/`restored`): wall time (ms) and the limits. */
  cuts: Array<{ time: number; action: 'cut' | 'nudge' | 'dip' | 'restore'; kind: string; learnedPerMinute: number; inForcePerMinute: number; confirmed?: boolean }>;
  /** Stops the worker (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * What the first line of bin/embedq.js (`#!/usr/bin/env -S NAME=value … node <flags>`) gives the
 * node process users start: its environment settings and its node flags.
 */
export function binLaunch(): { env: Record<string, string>; flags: string[] } {
  const shebang = readFileSync(path.join(ROOT, 'bin/embedq.js'), 'utf8').split('\n', 1)[0]!;
  const parts = shebang.split(/\s+/);
  const node = parts.indexOf('node');
  const settings = parts.slice(0, node).filter((part) => /^[A-Z_][A-Z0-9_]*=/.test(part));
  return {
    env: Object.fromEntries(settings.map((part) => [part.slice(0, part.indexOf('=')), part.slice(part.indexOf('=') + 1)])),
    flags: parts.slice(node + 1).filter((part) => part.startsWith('--')),
  };
}

/** `embedq worker` from the compiled build, as users run it (with what the bin's first line sets). */
export function spawnWorker(env: NodeJS.ProcessEnv, concurrency: number, nodeOptions: string[] = []): WorkerProcess {
  const launch = binLaunch();
  const child = spawn(process.execPath, [...launch.flags, ...nodeOptions, path.join(ROOT, 'bin/embedq.js'), 'worker', '--concurrency', String(concurrency)], {
    cwd: ROOT,
    env: { ...env, ...launch.env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const memory: Array<Record<string, number>> = [];
  const cuts: WorkerProcess['cuts'] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (line.includes('"msg":"memory"')) memory.push(JSON.parse(line) as Record<string, number>);
    if (/"msg":"rate limit (learned|lowered|restored|confirmed)/.test(line)) cuts.push({ ...(JSON.parse(line) as WorkerProcess['cuts'][number]), time: Date.now() });
  });
  return {
    child,
    memory,
    cuts,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** CPU seconds (user + system) a live process has used, from /proc. */
export function cpuSeconds(pid: number | string): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** CPU seconds (user + system) of each thread of a live process, by OS thread id, from /proc. */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const threads = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      threads.set(Number(tid), cpuSeconds(`${pid}/task/${tid}`));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return threads;
}

/** Resident set size in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

/**
 * The q-quantile (0..1) of a Prometheus histogram, its cumulative counts by upper bound (`+Inf`
 * included), interpolated linearly within the bucket it falls in, as PromQL's histogram_quantile
 * does; a quantile in the `+Inf` bucket is the highest finite bound.
 */
export function histogramQuantile(buckets: ReadonlyArray<{ le: number; count: number }>, q: number): number {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.at(-1)?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const { le, count } of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lowerBound;
      return count === lowerCount ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / (count - lowerCount);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return NaN;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** `embedq emulator` in its own process, so the bench's own work never delays its clock. */
export interface EmulatorProcess {
  url: string;
  stats(): Promise<EmulatorStats>;
  stop(): Promise<void>;
}

export async function spawnEmulator(flags: string[]): Promise<EmulatorProcess> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/embedq.js'), 'emulator', '--port', '0', ...flags], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const parsed = JSON.parse(line) as { url?: string; msg?: string };
      if (parsed.msg === 'emulator listening' && parsed.url) resolve(parsed.url);
    });
    child.once('exit', (code) => reject(new Error(`emulator exited with ${code}`)));
  });
  return {
    url,
    async stats() {
      const response = await fetch(`${url}/emulator/stats`);
      return (await response.json()) as EmulatorStats;
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * The largest value of each part of the workers' `memory` lines, as the bench's tables print it:
 * `main heap 40 (reserved 60), buffers 80; shard thread heap 30 (reserved 40), buffers 20, wasm 70`.
 */
export function memoryText(parts: Record<string, number>): string {
  return `main heap ${parts.heapUsedMb} (reserved ${parts.heapTotalMb}), buffers ${parts.arrayBuffersMb}; shard thread heap ${parts.shardThreadHeapMb} (reserved ${parts.shardThreadHeapTotalMb}), buffers ${parts.shardThreadArrayBuffersMb}, wasm ${parts.shardThreadWasmMb}`;
}
