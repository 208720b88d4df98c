import { randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { sleep } from '../../src/sleep.js';
import { startRedisCluster, type TestRedisCluster } from '../support/redis-cluster.js';
import { runEmbedq, spawnEmbedq, startWorld, stopProcess, type World } from '../support/world.js';

/**
 * A Redis Cluster with a replica per master, as production clusters run. A password rotated under
 * the workers made each of a worker's queues log "None of startup nodes is available" with its
 * stack, ~40 lines a second, and once the password was accepted again one of the worker's BullMQ
 * queues sometimes never fetched again (ioredis's Cluster.connect() never settled after a failed
 * ready check, and BullMQ awaited it: src/redis/settling-cluster.ts). A master that stops answering
 * (a frozen VM, a host gone without a reset) keeps its sockets open and sends no MOVED, and ioredis
 * learned a new topology only from those: after its replica took over, the workers and `submit
 * --wait` waited for the old master; and a queue whose blocking connection reconnected just before
 * the promotion sent its ready check to the frozen master and never fetched again (about one run in
 * two lost a queue; the job hung when it was the split, the model's or the write queue).
 */
const OLD_PASSWORD = 'old-pw';
const NEW_PASSWORD = 'new-pw';

describe('on a Redis Cluster with replicas', () => {
  let cluster: TestRedisCluster;
  let world: World;
  const prefix = `{f${randomBytes(4).toString('hex')}}`;

  beforeAll(async () => {
    // EMBEDQ_TEST_CLUSTER_PORT: the nodes' first port, on a machine whose users share it by port ranges.
    const basePort = process.env.EMBEDQ_TEST_CLUSTER_PORT ? Number(process.env.EMBEDQ_TEST_CLUSTER_PORT) : undefined;
    cluster = await startRedisCluster(3, { replicas: 1, nodeTimeoutMs: 2_000, basePort });
    await cluster.configSetAll('masterauth', OLD_PASSWORD);
    await cluster.configSetAll('requirepass', OLD_PASSWORD);
    cluster.auth(OLD_PASSWORD);
    world = await startWorld(
      { faults: { latencyMs: { min: 120, median: 150, p99: 200 } } },
      {
        REDIS_URL: undefined,
        REDIS_CLUSTER_NODES: cluster.nodes.map((node) => `redis://:${OLD_PASSWORD}@${node}`).join(','),
        EMBEDQ_REDIS_PREFIX: prefix,
        // Two requests a second: a job's 30 batches take ~15 s, so it is running when the master stops.
        EMBEDQ_QPM: '120',
        LOG_LEVEL: 'info',
      },
    );
    for (const name of ['rotate', 'freeze']) await world.put(`${name}/a.txt`, Array.from({ length: 300 }, (_, index) => `${name} line ${index}`).join('\n'));
  }, 90_000);
  afterAll(async () => {
    await world?.close();
    await cluster?.stop();
  });

  const statusOf = async (id: string): Promise<{ state: string; batchesDone: number } | undefined> => {
    const result = await runEmbedq(world.env, ['status', id, '--json']);
    return result.code === 0 ? (JSON.parse(result.stdout) as { state: string; batchesDone: number }) : undefined;
  };

  it('a failover, then a password rotated under a worker: it says so once, not a stack per queue and retry, and every queue takes jobs again once the password is accepted', { timeout: 150_000 }, async () => {
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let log = '';
    worker.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const ports = cluster.allNodes.map((node) => Number(node.split(':')[1]));
    const owner = await cluster.masterOf(prefix);
    try {
      await expect.poll(() => log, { timeout: 30_000 }).toContain('workers started');
      await sleep(3_000); // past its start
      // A replica promoted first: while the cluster says cluster_state:fail, the queues' blocking
      // connections fail their ready checks, which left a connect() that never settled.
      cluster.freeze(owner);
      await cluster.waitForNewMaster(prefix, owner, 30_000);
      cluster.thaw(owner);
      // A new password everywhere, and the clients' connections dropped (a rolling restart, CLIENT KILL).
      await cluster.configSetAll('masterauth', NEW_PASSWORD);
      await cluster.configSetAll('requirepass', NEW_PASSWORD);
      cluster.auth(NEW_PASSWORD);
      await Promise.all(ports.map((port) => cluster.cli(port, 'CLIENT', 'KILL', 'TYPE', 'normal')));
      await expect.poll(() => log, { timeout: 15_000 }).toContain('Redis refused the credentials');
      await sleep(5_000); // the queues' fetches keep failing meanwhile: 550 such lines in 5 s before
      expect(log.match(/None of startup nodes is available/g) ?? []).toEqual([]);
      expect(log.match(/"msg":"worker error"/g) ?? []).toEqual([]);
      expect(log.match(/Redis refused the credentials/g)).toHaveLength(1);
      // The old password accepted again beside the new one (an ACL user may have several), a node
      // at a time as an operator does: a reconnection whose slots came from a node that takes it and
      // whose ready check went to one that did not yet is what wedged a queue.
      for (const port of ports) {
        await cluster.cli(port, 'ACL', 'SETUSER', 'default', `>${OLD_PASSWORD}`);
        await sleep(150);
      }
      await expect.poll(() => log, { timeout: 20_000 }).toContain('Redis is reachable again');
      // Every queue of a job's path (split, the model's embed queue, write) takes its step: a
      // wedged one left the job queued or running with the worker's heartbeat healthy.
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/rotate/', '--out', 's3://out/rotate/', '--shard-rows', '100']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = /cj-\S+/.exec(submitted.stdout)![0];
      await expect.poll(async () => (await statusOf(id))?.state, { timeout: 60_000, interval: 1_000 }).toBe('completed');
    } finally {
      cluster.thaw(owner);
      await stopProcess(worker, 'SIGKILL');
      // Both passwords stay valid for the next test.
      await Promise.all(ports.map((port) => cluster.cli(port, 'ACL', 'SETUSER', 'default', `>${OLD_PASSWORD}`)));
    }
  });

  it('a frozen master of the prefix’s slot: its replica takes over, and the job completes while the old master is still frozen', { timeout: 120_000 }, async () => {
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    const waiting = spawnEmbedq(world.env, ['submit', 's3://corpus/freeze/', '--out', 's3://out/freeze/', '--shard-rows', '100', '--wait']);
    let waitOutput = '';
    waiting.stdout!.on('data', (chunk: Buffer) => (waitOutput += chunk.toString()));
    const waited = new Promise<number | null>((resolve) => waiting.once('exit', resolve));
    const owner = await cluster.masterOf(prefix);
    try {
      await expect.poll(() => /cj-\S+/.exec(waitOutput)?.[0], { timeout: 30_000 }).toBeDefined();
      const id = /cj-\S+/.exec(waitOutput)![0];
      await expect.poll(async () => (await statusOf(id))?.batchesDone ?? 0, { timeout: 30_000, interval: 500 }).toBeGreaterThanOrEqual(3);
      cluster.freeze(owner);
      await cluster.waitForNewMaster(prefix, owner, 30_000);
      // Without a periodic slots refresh nothing moved until the old master was thawed.
      await expect.poll(async () => (await statusOf(id))?.state, { timeout: 45_000, interval: 1_000 }).toBe('completed');
      expect(await waited).toBe(0);
    } finally {
      cluster.thaw(owner);
      await stopProcess(worker, 'SIGKILL');
      await stopProcess(waiting, 'SIGKILL');
    }
  });
});
