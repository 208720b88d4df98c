import { randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { sleep } from '../../src/sleep.js';
import { startRedisCluster, type TestRedisCluster } from '../support/redis-cluster.js';
import { runEmbedq, spawnEmbedq, startWorld, stopProcess, type World } from '../support/world.js';

/**
 * A Redis Cluster with a replica per master, as production clusters run. A password rotated under
 * the workers made each of a worker's queues log "None of startup nodes is available" with its
 * stack, ~40 lines a second. A master that stops answering (a frozen VM, a host gone without a
 * reset) keeps its sockets open and sends no MOVED, and ioredis learned a new topology only from
 * those: after its replica took over, the workers and `submit --wait` waited for the old master.
 */
const OLD_PASSWORD = 'old-pw';
const NEW_PASSWORD = 'new-pw';

describe('on a Redis Cluster with replicas', () => {
  let cluster: TestRedisCluster;
  let world: World;
  const prefix = `{f${randomBytes(4).toString('hex')}}`;

  beforeAll(async () => {
    cluster = await startRedisCluster(3, { replicas: 1, nodeTimeoutMs: 2_000 });
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

  // What happens after the password is accepted again is not asserted: one of the worker's BullMQ
  // queues sometimes never fetches again (2 of 4 full suite runs; most reproductions after a
  // failover; not fixed: README "A Redis Cluster", bullmq#4138).
  it('a password rotated under a worker: it says so once, not a stack per queue and retry', { timeout: 120_000 }, async () => {
    const worker = spawnEmbedq(world.env, ['worker', '--concurrency', '2']);
    let log = '';
    worker.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const ports = cluster.allNodes.map((node) => Number(node.split(':')[1]));
    try {
      await expect.poll(() => log, { timeout: 30_000 }).toContain('workers started');
      await sleep(3_000); // past its start
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
    } finally {
      await stopProcess(worker, 'SIGKILL');
      // The old password accepted again beside the new one (an ACL user may have several), for the next test.
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
