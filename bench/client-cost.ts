import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { loadSettings } from '../src/config.js';
import { createDashScopeClient } from '../src/dashscope/dashscope-client.js';
import { embeddingParameters, parseJobOptions } from '../src/job-options.js';
import { binLaunch, spawnEmulator } from './processes.js';

/**
 * The DashScope client alone: HTTP to the emulator and decoding, with nothing of the pipeline
 * (no Redis, BullMQ, split or shard writing). Its CPU per line is the part of the worker's cost
 * that any client reading these responses off a socket pays, so the worker's ratio to the
 * JSON.parse floor can be read as "client" plus "pipeline".
 *
 * Run as its own process (`node … bench/client-cost.ts <emulator url> <corpus> <lines>`) with the
 * worker's node flags, so its process CPU is its own; prints one JSON line.
 */
const CONCURRENCY = 32;
const WARM_UP_LINES = 5_000;

export async function measureClientCost(emulatorFlags: string[], corpus: string, lines: number): Promise<{ cpuMicrosPerLine: number }> {
  const emulator = await spawnEmulator(emulatorFlags);
  try {
    const launch = binLaunch();
    const child = spawn(process.execPath, [...launch.flags, '--import', 'tsx', import.meta.filename, emulator.url, corpus, String(lines)], {
      cwd: path.resolve(import.meta.dirname, '..'),
      env: { ...process.env, ...launch.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`client-cost exited with ${code}`);
    return JSON.parse(output.trim().split('\n').at(-1)!) as { cpuMicrosPerLine: number };
  } finally {
    await emulator.stop();
  }
}

async function run(url: string, corpus: string, lines: number): Promise<void> {
  const texts = (await readFile(corpus, 'utf8')).split('\n').filter(Boolean);
  const client = createDashScopeClient(loadSettings({ DASHSCOPE_BASE_URL: url, DASHSCOPE_API_KEY: 'sk-bench' }).dashscope);
  // What the overhead scenario's job asks for: the job defaults.
  const parameters = embeddingParameters(parseJobOptions({ input: corpus, output: 'unused/' }));
  const embedLines = async (count: number): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        for (let start = next; start < count; start = next) {
          next += 10;
          const first = start % texts.length;
          await client.embed(texts.slice(first, first + 10), parameters);
        }
      }),
    );
  };
  await embedLines(WARM_UP_LINES);
  const started = process.cpuUsage();
  await embedLines(lines);
  const used = process.cpuUsage(started);
  await client.close();
  console.log(JSON.stringify({ cpuMicrosPerLine: (used.user + used.system) / lines }));
}

if (process.argv[1] === import.meta.filename) {
  const [url, corpus, lines] = process.argv.slice(2);
  await run(url!, corpus!, Number(lines));
}
