import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { freePort } from '../../src/redis/private-redis.js';

const run = promisify(execFile);

/**
 * A real Redis Cluster of three masters (by default no replicas) from Debian's `redis-server` and
 * `redis-cli` (`scripts/ensure-redis.sh` installs both), each on a free loopback port with its
 * own folder; `stop` kills the servers and removes the folders.
 */
export interface TestRedisCluster {
  /** `127.0.0.1:port` of each master at creation: what `REDIS_CLUSTER_NODES` lists. */
  nodes: string[];
  /** `127.0.0.1:port` of every node, masters first, then the replicas. */
  allNodes: string[];
  /** The port of the node that serves `key`'s slot now (CLUSTER KEYSLOT, then CLUSTER SLOTS), asked of a node that answers. */
  masterOf(key: string): Promise<number>;
  /** SIGSTOP: the node keeps its sockets but answers nothing (as a VM paused, a swap storm). */
  freeze(port: number): void;
  /** SIGCONT after `freeze`. */
  thaw(port: number): void;
  /** Waits until a node other than `port` serves `key`'s slot (a replica promoted); its port. */
  waitForNewMaster(key: string, port: number, timeoutMs?: number): Promise<number>;
  /** CONFIG SET on every node that answers, with the password of `auth`. */
  configSetAll(parameter: string, value: string): Promise<void>;
  /** The password this helper's own redis-cli calls give from now on (after a requirepass). */
  auth(password: string | undefined): void;
  /** `redis-cli <args>` on one node, with the password of `auth`. */
  cli(port: number, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface RedisClusterOptions {
  /** Replicas per master (`--cluster-replicas`); 0 by default. */
  replicas?: number;
  /** `cluster-node-timeout` (Default: 5000): how long a master may not answer before a failover. */
  nodeTimeoutMs?: number;
  /** Nodes on basePort, basePort + 1, … (buses + 10000) instead of free ports anywhere: for a machine shared by port ranges. */
  basePort?: number;
}

export async function startRedisCluster(masters = 3, options: RedisClusterOptions = {}): Promise<TestRedisCluster> {
  const replicas = options.replicas ?? 0;
  const count = masters * (1 + replicas);
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
    let next = options.basePort;
    while (ports.length < count) {
      if (next !== undefined && next >= options.basePort! + 100) throw new Error(`no ${count} free ports (and buses) from ${options.basePort}`);
      const port = next === undefined ? await freePort() : next++;
      // The cluster bus listens on port + 10000: both must be free.
      if (port + 10_000 <= 65_535 && !ports.includes(port) && (await isFree(port)) && (await isFree(port + 10_000))) ports.push(port);
    }
    const nodeTimeoutMs = options.nodeTimeoutMs ?? 5_000;
    const byPort = new Map<number, ChildProcess>();
    for (const port of ports) {
      const child = await startNode(port, path.join(root, String(port)), nodeTimeoutMs);
      children.push(child);
      byPort.set(port, child);
    }
    const allNodes = ports.map((port) => `127.0.0.1:${port}`);
    // redis-cli makes the first `masters` nodes listed masters and gives each of the rest one as its master.
    await run('redis-cli', ['--cluster', 'create', ...allNodes, '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 });
    await waitForClusterOk(ports);
    if (replicas > 0) await waitFor(async () => (await Promise.all(ports.slice(masters).map((port) => cli(port, 'INFO', 'replication')))).every((info) => info.includes('master_link_status:up')), 'every replica to sync');
    const child = (port: number): ChildProcess => {
      const found = byPort.get(port);
      if (!found) throw new Error(`no node on ${port}`);
      return found;
    };
    const frozen = new Set<number>();
    const live = (): number[] => ports.filter((port) => byPort.get(port)!.exitCode === null && byPort.get(port)!.signalCode === null && !frozen.has(port));
    let password: string | undefined;
    const nodeCli = (port: number, ...command: string[]): Promise<string> => cli(port, ...(password ? ['--no-auth-warning', '-a', password] : []), ...command);
    const masterOf = async (key: string): Promise<number> => {
      for (const port of live()) {
        const slot = Number(await nodeCli(port, 'CLUSTER', 'KEYSLOT', key));
        // CLUSTER SHARDS would say more; CLUSTER NODES is on every Redis 7: `id addr flags master ping pong epoch state slots…`.
        const lines = (await nodeCli(port, 'CLUSTER', 'NODES')).split('\n');
        for (const line of lines) {
          const [, address, flags, , , , , state, ...slots] = line.split(' ');
          if (!address || !flags?.includes('master') || flags.includes('fail') || state !== 'connected') continue;
          const owns = slots.some((range) => {
            const [start, end = start] = range.split('-').map(Number);
            return start! <= slot && slot <= end!;
          });
          if (owns) return Number(/:(\d+)@/.exec(address)![1]);
        }
      }
      throw new Error(`no live node knows a master for ${key}`);
    };
    return {
      nodes: allNodes.slice(0, masters),
      allNodes,
      masterOf,
      freeze: (port) => {
        child(port).kill('SIGSTOP');
        frozen.add(port);
      },
      thaw: (port) => {
        child(port).kill('SIGCONT');
        frozen.delete(port);
      },
      waitForNewMaster: async (key, port, timeoutMs = 30_000) => {
        let owner = port;
        await waitFor(async () => (owner = await masterOf(key).catch(() => port)) !== port, `a new master for ${key}`, timeoutMs);
        return owner;
      },
      configSetAll: async (parameter, value) => {
        await Promise.all(live().map((port) => run('redis-cli', ['-p', String(port), ...(password ? ['--no-auth-warning', '-a', password] : []), 'CONFIG', 'SET', parameter, value], { timeout: 5_000 })));
      },
      auth: (next) => {
        password = next;
      },
      cli: nodeCli,
      stop: async () => {
        for (const port of frozen) child(port).kill('SIGCONT');
        await stop();
      },
    };
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

async function startNode(port: number, dir: string, nodeTimeoutMs: number): Promise<ChildProcess> {
  await mkdir(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf')];
  args.push('--cluster-node-timeout', String(nodeTimeoutMs), '--dir', dir, '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--loglevel', 'warning');
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
