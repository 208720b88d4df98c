import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

import { Redis } from 'ioredis';

/**
 * A redis-server child process on a free loopback port (tests, `embedq demo`); no persistence
 * unless `appendOnly`. It stops when the process that started it dies, however it dies (where
 * util-linux's `setpriv` is available: see {@link diesWithParent}).
 */
export interface PrivateRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Kills the server at once (SIGKILL by default), as a crash would; `restart` brings it back. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and data folder (its AOF, if any, is replayed). */
  restart(): Promise<void>;
}

export interface PrivateRedisOptions {
  maxmemory?: string;
  /** AOF with `appendfsync always`, as embedq's runbook asks of a production Redis (Default: false). */
  appendOnly?: boolean;
  /**
   * Runs the server in a process group of its own, so a terminal's Ctrl-C reaches only the parent,
   * which stops it after its clients have closed (`embedq demo`). In the parent's group the server
   * died with it first, and the workers' reconnect errors filled the screen while they closed
   * (Default: false).
   */
  ownProcessGroup?: boolean;
  /**
   * The server's working folder, made if missing and removed at `stop` (Default: a new one in the
   * system's temp folder). The demo's is in its `--dir`: a demo killed outright runs no clean-up,
   * and each such run left an `embedq-redis-*` folder in /tmp.
   */
  dir?: string;
}

/** Starts Debian's (or any) `redis-server` from PATH; `scripts/ensure-redis.sh` installs it. */
export async function startPrivateRedis(options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  let lastError: unknown;
  // A free port can be taken between probing and binding; try a few.
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const port = await freePort();
    try {
      return await launch(port, options);
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`could not start redis-server: ${String(lastError)}`, { cause: lastError });
}

async function launch(port: number, options: PrivateRedisOptions): Promise<PrivateRedis> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'embedq-redis-')));
  if (options.dir) await mkdir(dir, { recursive: true });
  let child = await spawnServer(port, dir, options).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const url = `redis://127.0.0.1:${port}`;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await gone;
  };
  return {
    url,
    port,
    kill,
    async restart() {
      await kill();
      child = await spawnServer(port, dir, options);
    },
    async stop() {
      await kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function spawnServer(port: number, dir: string, options: PrivateRedisOptions): Promise<ChildProcess> {
  const persistence = options.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir];
  args.push('--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--loglevel', 'warning');
  if (options.maxmemory) args.push('--maxmemory', options.maxmemory);
  const [command, ...launcher] = [...diesWithParent(), 'redis-server'];
  const child: ChildProcess = spawn(command!, [...launcher, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: options.ownProcessGroup === true });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const notAvailable = (reason: string): Error =>
    new Error(`redis-server is not available (${reason}); run scripts/ensure-redis.sh or install Debian's redis-server`);
  const exited = new Promise<never>((_, reject) => {
    child.once('error', (error) => reject(notAvailable(error.message)));
    // 127: setpriv found no redis-server to run.
    child.once('exit', (code) => reject(code === 127 && launcher.length > 0 ? notAvailable(stderr.trim()) : new Error(`redis-server exited with code ${code}: ${stderr.trim()}`)));
  });
  exited.catch(() => undefined);
  const url = `redis://127.0.0.1:${port}`;
  try {
    await Promise.race([waitForPing(url), exited]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return child;
}

let deathSignalPrefix: string[] | undefined;

/**
 * `setpriv --pdeathsig TERM --` when util-linux's `setpriv` is on PATH (Linux; Debian has it in
 * every install), else nothing. The kernel then sends redis-server SIGTERM when the thread that
 * started it ends. A parent killed outright (`kill -9`, the OOM killer, a test runner killed on a
 * timeout) runs none of its own clean-up, and its private Redis, for the demo in a process group
 * of its own, went on running on its port.
 */
function diesWithParent(): string[] {
  if (deathSignalPrefix) return deathSignalPrefix;
  const found = process.platform === 'linux' && (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, 'setpriv'), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  deathSignalPrefix = found ? ['setpriv', '--pdeathsig', 'TERM', '--'] : [];
  return deathSignalPrefix;
}

async function waitForPing(url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.ping();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      client.disconnect();
    }
  }
}

/** Asks the OS for a free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
