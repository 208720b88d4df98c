import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { freePort } from '../../src/redis/private-redis.js';

const run = promisify(execFile);

/**
 * A real Redis Cluster of three masters (no replicas) from Debian's `redis-server` and
 * `redis-cli` (`scripts/ensure-redis.sh` installs both), each on a free loopback port with its
 * own folder; `stop` kills the servers and removes the folders.
 */
export interface TestRedisCluster {
  /** `127.0.0.1:port` of each master: what `REDIS_CLUSTER_NODES` lists. */
  nodes: string[];
  stop(): Promise<void>;
}

export async function startRedisCluster(masters = 3): Promise<TestRedisCluster> {
  const root = await mkdtemp(path.join(tmpdir(), 'embedq-cluster-'));
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    await rm(root, { recursive: true, force: true });
  };
  try {
    const ports: number[] = [];
    while (ports.length < masters) {
      const port = await freePort();
      // The cluster bus listens on port + 10000: both must be free.
      if (port + 10_000 <= 65_535 && !ports.includes(port) && (await isFree(port + 10_000))) ports.push(port);
    }
    for (const port of ports) children.push(await startNode(port, path.join(root, String(port))));
    const nodes = ports.map((port) => `127.0.0.1:${port}`);
    await run('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await waitForClusterOk(ports);
    return { nodes, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function startNode(port: number, dir: string): Promise<ChildProcess> {
  await mkdir(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf')];
  args.push('--cluster-node-timeout', '5000', '--dir', dir, '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--loglevel', 'warning');
  const child = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (error) => reject(new Error(`redis-server is not available (${error.message}); run scripts/ensure-redis.sh`)));
    child.once('exit', (code) => reject(new Error(`redis-server on ${port} exited with ${code}: ${stderr.trim()}`)));
  });
  failed.catch(() => undefined);
  await Promise.race([waitFor(async () => (await cli(port, 'PING')) === 'PONG', `redis-server on ${port} to answer`), failed]);
  return child;
}

async function cli(port: number, ...command: string[]): Promise<string> {
  try {
    const { stdout } = await run('redis-cli', ['-p', String(port), ...command], { timeout: 5_000 });
    return stdout.trim();
  } catch {
    return '';
  }
}

/** Every node agrees the cluster is up and knows all the others (slots are gossiped). */
async function waitForClusterOk(ports: number[]): Promise<void> {
  await waitFor(async () => {
    const infos = await Promise.all(ports.map((port) => cli(port, 'CLUSTER', 'INFO')));
    return infos.every((info) => info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${ports.length}`));
  }, 'the cluster to be ok on every node');
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
