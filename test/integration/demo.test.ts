import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';

import { queryParquet, sqlString } from '../support/duckdb.js';
import { EMBEDQ_BIN } from '../support/fresh-build.js';
import { ROOT, runEmbedq, spawnEmbedq } from '../support/world.js';

/**
 * `embedq demo`, the README's first command, as a user runs it: a child process with no Redis,
 * store or API key configured. It must run the whole pipeline to files another reader accepts, and
 * leave nothing running behind it: not when it ends, nor when it is interrupted or its reader goes.
 */
const PRIVATE_REDIS = /private Redis redis:\/\/127\.0\.0\.1:(\d+)/;

function demoEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['DASHSCOPE_API_KEY', 'REDIS_URL', 'DASHSCOPE_BASE_URL', 'LOG_LEVEL']) delete env[name];
  return env;
}

/** Whether nothing listens on the loopback port any more (the private redis-server is gone). */
function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** The private Redis's port, once the demo has printed it. */
function redisPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let printed = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      printed += chunk.toString();
      const match = PRIVATE_REDIS.exec(printed);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`demo exited (${code}) before starting Redis: ${printed}`)));
  });
}

function exitCode(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));
}

/** The demo's folders (its Redis data, the emulator's, the output): removed after the tests, as `embedq demo --dir` leaves them for the user. */
const demoDirs: string[] = [];
async function demoDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'embedq-demo-'));
  demoDirs.push(dir);
  return dir;
}

describe('embedq demo', () => {
  afterAll(async () => {
    await Promise.all(demoDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });
  it('embeds the sample corpus into Parquet that DuckDB reads, answers its queries, and stops its private Redis', async () => {
    const dir = await demoDir();
    const { code, stdout, stderr } = await runEmbedq(demoEnv(), ['demo', '--dir', dir]);
    expect(code, stderr).toBe(0);

    const counts = /rows\s+([\d,]+) embedded · (\d+) blank skipped · (\d+) failed · ([\d,]+) lines/.exec(stdout);
    expect(counts, stdout).not.toBeNull();
    const [embedded, blank, failed, lines] = counts!.slice(1).map((figure) => Number(figure.replaceAll(',', '')));
    expect(failed).toBe(0);
    expect(embedded! + blank!).toBe(lines);
    expect(lines).toBeGreaterThanOrEqual(3_000);

    const output = path.join(dir, 'output');
    expect(existsSync(path.join(output, '_SUCCESS'))).toBe(true);
    const [read] = await queryParquet(
      `SELECT count(*) AS rows, count(dense) AS dense, count(sparse) AS sparse, min(len(dense)) AS dimension FROM read_parquet(${sqlString(path.join(output, 'part-*.parquet'))})`,
    );
    expect(read).toEqual({ rows: BigInt(embedded!), dense: BigInt(embedded!), sparse: BigInt(embedded!), dimension: 1024n });

    // Three queries, each with three neighbours and their scores.
    expect(stdout.match(/^query: /gm)).toHaveLength(3);
    expect(stdout.match(/^ {2}\d\.\d{3} {2}row \d+ {2}\S/gm)).toHaveLength(9);
    expect(await portClosed(Number(PRIVATE_REDIS.exec(stdout)![1]))).toBe(true);
  }, 120_000);

  it('stops its private Redis when interrupted (SIGTERM, a terminal\'s Ctrl-C) or when its reader goes away (EPIPE)', async () => {
    const terminated = spawnEmbedq(demoEnv(), ['demo', '--dir', await demoDir()]);
    const terminatedPort = await redisPort(terminated);
    terminated.kill('SIGTERM');
    expect(await exitCode(terminated)).toBe(143);
    expect(await portClosed(terminatedPort)).toBe(true);

    // `embedq demo | head -2`: the reader closes the pipe; the next line the demo writes fails.
    const piped = spawnEmbedq(demoEnv(), ['demo', '--dir', await demoDir()]);
    const pipedPort = await redisPort(piped);
    piped.stdout!.destroy();
    expect(await exitCode(piped)).toBe(141);
    expect(await portClosed(pipedPort)).toBe(true);

    // Ctrl-C in a terminal: SIGINT to the demo's whole process group. Its Redis runs in a group of
    // its own, so it is stopped after the workers, not killed under them: no reconnect errors.
    const typed = spawn(process.execPath, [EMBEDQ_BIN, 'demo', '--dir', await demoDir()], {
      cwd: ROOT,
      env: demoEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    try {
      let stderr = '';
      typed.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const typedPort = await redisPort(typed);
      process.kill(-typed.pid!, 'SIGINT');
      expect(await exitCode(typed)).toBe(130);
      expect(await portClosed(typedPort)).toBe(true);
      expect(stderr).not.toMatch(/ECONNREFUSED/);
    } finally {
      if (typed.exitCode === null) process.kill(-typed.pid!, 'SIGKILL');
    }
  }, 90_000);

  it('refuses a --dir that holds files it did not make, and leaves them (it used to delete the whole folder)', async () => {
    const dir = await demoDir();
    await writeFile(path.join(dir, 'notes.txt'), 'mine');
    const { code, stderr } = await runEmbedq(demoEnv(), ['demo', '--dir', dir]);
    expect(code).toBe(2);
    expect(stderr).toContain(`embedq: CONFIG_INVALID: ${dir} is not empty and was not made by embedq demo`);
    expect(await readFile(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    // A file given as the folder: CONFIG_INVALID, where it was INTERNAL (ENOTDIR).
    const asFile = await runEmbedq(demoEnv(), ['demo', '--dir', path.join(dir, 'notes.txt')]);
    expect([asFile.code, asFile.stderr]).toEqual([2, `embedq: CONFIG_INVALID: ${path.join(dir, 'notes.txt')} cannot be a folder: it, or a folder above it, is a file; choose a new or empty folder with --dir\n`]);
    await rm(dir, { recursive: true, force: true });
  });

  it("`embedq emulator` refuses a bad flag as every other command does: the problem, the usage, exit code 2 (it exited 1 without usage)", async () => {
    for (const args of [['--bogus'], ['--qpm', '-1']]) {
      const { code, stderr } = await runEmbedq(demoEnv(), ['emulator', ...args]);
      expect(code, args.join(' ')).toBe(2);
      expect(stderr).toMatch(/^error: /);
      expect(stderr).toContain('Usage: embedq emulator [options]');
    }
  });

  // A fresh machine: the README's first command installs redis-server through
  // scripts/ensure-redis.sh. Here PATH holds every command but redis-*, and an apt-get that
  // "installs" by linking the machine's own redis-server and redis-cli into PATH.
  it.runIf(process.getuid?.() === 0 && existsSync('/usr/bin/apt-get'))('installs redis-server when it is missing, then starts its private Redis', async () => {
    const bin = await mkdtemp(path.join(tmpdir(), 'embedq-path-'));
    const installed = (name: string): string => (process.env.PATH ?? '').split(path.delimiter).map((dir) => path.join(dir, name)).find((file) => existsSync(file))!;
    try {
      for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
        for (const name of await readdir(dir).catch(() => [])) {
          if (/^redis-/.test(name) || name === 'apt-get' || name === 'service' || existsSync(path.join(bin, name))) continue;
          await symlink(path.join(dir, name), path.join(bin, name));
        }
      }
      const aptGet = [
        '#!/bin/bash',
        `echo "$*" >> ${bin}/apt-get.log`,
        `if [[ " $* " == *" install "* ]]; then ln -s ${installed('redis-server')} ${bin}/redis-server; ln -s ${installed('redis-cli')} ${bin}/redis-cli; fi`,
      ];
      await writeFile(path.join(bin, 'apt-get'), `${aptGet.join('\n')}\n`, { mode: 0o755 });
      await writeFile(path.join(bin, 'service'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      const demo = spawnEmbedq({ ...demoEnv(), PATH: bin }, ['demo', '--dir', await demoDir()]);
      let stderr = '';
      demo.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const port = await redisPort(demo);
      demo.kill('SIGTERM');
      expect(await exitCode(demo)).toBe(143);
      expect(await portClosed(port)).toBe(true);
      expect(stderr).toContain("embedq: installing Debian's redis-server");
      expect(await readFile(path.join(bin, 'apt-get.log'), 'utf8')).toMatch(/install .*redis-server redis-tools/);
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  }, 60_000);

  it('leaves no Redis behind when it is killed outright (SIGKILL runs none of its own clean-up)', async () => {
    const killed = spawnEmbedq(demoEnv(), ['demo', '--dir', await demoDir()]);
    const port = await redisPort(killed);
    killed.kill('SIGKILL');
    await exitCode(killed);
    // The kernel signals the server when its parent dies; it shuts down on its own time.
    const deadline = Date.now() + 10_000;
    while (!(await portClosed(port)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await portClosed(port)).toBe(true);
  }, 60_000);

  it('keeps its Redis in its own folder, so a demo killed outright leaves nothing in the temp folder, and the next run clears what it left', async () => {
    const dir = await demoDir();
    const killed = spawnEmbedq(demoEnv(), ['demo', '--dir', dir]);
    const port = await redisPort(killed);
    // Where the server works, as it says itself. Before, a new /tmp/embedq-redis-* that a demo killed outright left behind.
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
    await client.connect();
    expect(await client.config('GET', 'dir')).toEqual(['dir', path.join(dir, 'redis')]);
    client.disconnect();
    killed.kill('SIGKILL');
    await exitCode(killed);
    const deadline = Date.now() + 10_000;
    while (!(await portClosed(port)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    // The next run in the folder accepts what the killed one left, and clears it as it goes.
    const { code, stderr } = await runEmbedq(demoEnv(), ['demo', '--dir', dir]);
    expect(code, stderr).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(['.embedq-demo', 'corpus', 'output']);
  }, 120_000);
});
