import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { inject } from 'vitest';

import type { CorpusJobRecord } from '../../jobs/corpus-store.js';
import { loadSettings, type Settings } from '../../src/config.js';
import { startEmulator, type EmulatorOptions, type EmulatorStats, type RunningEmulator } from '../../src/emulator/server.js';
import { createLogger } from '../../src/logger.js';
import { sleep } from '../../src/sleep.js';
import { createServices, type Services } from '../../workers/services.js';
import { buildCorpus } from './corpus-fixture.js';
import { EMBEDQ_BIN } from './fresh-build.js';
import { startS3rver, type TestS3 } from './s3rver.js';

export const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * Everything a pipeline test needs, all real: the run's redis-server (own key prefix per world),
 * s3rver with `corpus` and `out` buckets, and the DashScope emulator over HTTP.
 */
export interface World {
  env: NodeJS.ProcessEnv;
  settings: Readonly<Settings>;
  s3: TestS3;
  emulator: RunningEmulator;
  services: Services;
  put(key: string, body: string | Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** `extraEnv` adds to or overrides the world's environment; an `undefined` value removes a variable. */
export async function startWorld(emulatorOptions: Partial<EmulatorOptions> = {}, extraEnv: Record<string, string | undefined> = {}): Promise<World> {
  const s3 = await startS3rver();
  await s3.createBucket('corpus');
  await s3.createBucket('out');
  const emulator = await startEmulator({ port: 0, ...emulatorOptions });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    REDIS_URL: inject('redisUrl'),
    EMBEDQ_REDIS_PREFIX: `t${randomBytes(4).toString('hex')}`,
    DASHSCOPE_BASE_URL: emulator.url,
    EMBEDQ_STALLED_INTERVAL_MS: '1000',
    EMBEDQ_LOCK_DURATION_MS: '4000',
    LOG_LEVEL: 'warn',
    ...s3.env,
    ...extraEnv,
  };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  const settings = loadSettings(env);
  const services = createServices(settings, createLogger({ level: 'warn' }, process.stderr));
  return {
    env,
    settings,
    s3,
    emulator,
    services,
    async put(key, body) {
      await s3.client.send(new PutObjectCommand({ Bucket: 'corpus', Key: key, Body: body }));
    },
    async close() {
      await Promise.all([...children].map((child) => stopProcess(child, 'SIGKILL')));
      await services.close();
      await emulator.close();
      await s3.close();
    },
  };
}

/** Children still running; a world's close() kills them, so a test that timed out leaves none. */
const children = new Set<ChildProcess>();

/** `embedq <args>` in a child process, as a user runs it (the compiled CLI; fresh-build.ts keeps dist/ current). */
export function spawnEmbedq(env: NodeJS.ProcessEnv, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [EMBEDQ_BIN, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export async function runEmbedq(env: NodeJS.ProcessEnv, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnEmbedq(env, args);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  return { code, stdout, stderr };
}

export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

export async function waitForJob(
  services: Services,
  id: string,
  until: (record: CorpusJobRecord) => boolean = (record) => ['completed', 'failed', 'cancelled'].includes(record.state),
  timeoutMs = 50_000,
): Promise<CorpusJobRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await services.corpora.get(id);
    if (record && until(record)) return record;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${id}: ${JSON.stringify(record)}`);
    await sleep(100);
  }
}

/** Copies every object under `prefix` of a bucket into a fresh local folder (DuckDB reads files). */
export async function downloadPrefix(s3: TestS3, bucket: string, prefix: string): Promise<{ folder: string; keys: string[] }> {
  const folder = await mkdtemp(path.join(tmpdir(), 'embedq-out-'));
  const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  const keys: string[] = [];
  for (const object of listed.Contents ?? []) {
    const key = object.Key!;
    const response = await s3.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const target = path.join(folder, key.slice(prefix.length));
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, await response.Body!.transformToByteArray());
    keys.push(key.slice(prefix.length));
  }
  return { folder, keys: keys.sort() };
}

export async function removeFolder(folder: string): Promise<void> {
  await rm(folder, { recursive: true, force: true });
}

/**
 * `embedq emulator` in its own process: its clock then runs apart from this test process, where
 * s3rver's work (shard uploads) would otherwise delay it and fake bursts.
 */
export async function spawnEmulatorProcess(env: NodeJS.ProcessEnv, flags: string[]): Promise<{ url: string; stats(): Promise<EmulatorStats>; stop(): Promise<void> }> {
  const child = spawnEmbedq(env, ['emulator', '--port', '0', ...flags]);
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const match = /"url":"([^"]+)"/.exec(buffered);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`emulator exited with ${code}`)));
  });
  return {
    url,
    async stats() {
      return (await (await fetch(`${url}/emulator/stats`)).json()) as EmulatorStats;
    },
    stop: () => stopProcess(child),
  };
}

/** A world whose DashScope is an emulator process allowing `qpm`, and a corpus under `data/`. */
export interface RateLimitedWorld {
  world: World;
  emulator: Awaited<ReturnType<typeof spawnEmulatorProcess>>;
  /** The world's environment pointed at the limited emulator: what `embedq` children get. */
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

/**
 * The rate tests' setting: the emulator in its own process (its clock apart from s3rver's work),
 * limited to `qpm` with 40/80/200 ms latency, and `lines` text lines to embed.
 */
export async function startRateLimitedWorld(qpm: number, extraEnv: Record<string, string> = {}, lines = 2400): Promise<RateLimitedWorld> {
  const world = await startWorld({}, extraEnv);
  const emulator = await spawnEmulatorProcess(world.env, ['--qpm', String(qpm), '--latency-ms', '40,80,200', '--token-counting', 'estimate']);
  for (const object of buildCorpus('data/', { textLines: lines }).objects) await world.put(object.key, object.body);
  return {
    world,
    emulator,
    env: { ...world.env, DASHSCOPE_BASE_URL: emulator.url },
    async close() {
      await emulator.stop();
      await world.close();
    },
  };
}
