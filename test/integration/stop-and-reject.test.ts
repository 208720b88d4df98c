import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cancelCorpusJob, retryCorpusJob, submitCorpusJob } from '../../jobs/enqueue.js';
import { embedJobId, embedQueue, queueOptions, QUEUES, writeShardJobId } from '../../jobs/queues.js';
import { loadSettings } from '../../src/config.js';
import { parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { sleep } from '../../src/sleep.js';
import { createServices, type Services } from '../../workers/services.js';
import { settleStopped } from '../../workers/settle-stopped.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startWorld, waitForJob, type World } from '../support/world.js';

const submit = (services: Services, output: string): Promise<string> =>
  submitCorpusJob(
    { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() },
    parseJobOptions({ input: 's3://corpus/data/', output, shardRows: 100, outputType: 'dense' }),
  );

describe('stopping and systematic failures (issue 9, items 9 and 11)', () => {
  let world: World;
  beforeAll(async () => {
    // Slow answers: a request is in flight for seconds, as with a struggling provider.
    world = await startWorld({ faults: { latencyMs: { min: 6_000, median: 7_000, p99: 8_000 } } });
    for (const object of buildCorpus('data/', { textLines: 150 }).objects) await world.put(object.key, object.body);
  });
  afterAll(() => world.close());

  it('cancel aborts the requests in flight: every step of the job has stopped within 2 s', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const id = await submit(world.services, 's3://out/cancel-abort/');
      const deadline = Date.now() + 20_000;
      while ((await world.services.queues[embedQueue('text-embedding-v4')].getActive()).length < 4 && Date.now() < deadline) await sleep(50);
      await sleep(300); // the requests are on the wire now
      const inFlight = new Set((await world.services.queues[embedQueue('text-embedding-v4')].getActive()).map((job) => job.id));
      expect(inFlight.size).toBe(4);
      const cancelledAt = Date.now();
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      // Those steps end (their requests aborted); queued steps of the job that a worker picks up
      // next are no-ops and come and go, so they are not what is measured here.
      const stillActive = async (): Promise<number> => (await world.services.queues[embedQueue('text-embedding-v4')].getActive()).filter((job) => inFlight.has(job.id)).length;
      while ((await stillActive()) > 0 && Date.now() - cancelledAt < 5_000) await sleep(25);
      expect(await stillActive()).toBe(0);
      expect(Date.now() - cancelledAt).toBeLessThan(2_000);
      expect((await world.services.corpora.get(id))!.batchesDone).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('the queued steps of a cancelled run leave the queues at once (they held embed.backlog, what KEDA scales on, until workers ended them one by one; handed-back ones for their whole delay)', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    const embed = world.services.queues[embedQueue('text-embedding-v4')];
    const other = 'cj-zzzzzz-abcdef';
    const id = await submit(world.services, 's3://out/cancel-backlog/');
    // Steps handed back in a 429 storm wait out their delay: one of this run, one of a newer
    // generation (a retry at once) and one of another job, which must stay.
    const handedBack = [embedJobId(id, 0, 90, 0), embedJobId(id, 1, 90, 0), embedJobId(other, 0, 90, 0)];
    try {
      const deadline = Date.now() + 20_000;
      while ((await embed.getActive()).length < 4 && Date.now() < deadline) await sleep(50);
      for (const stepId of handedBack) await embed.add('embed-batch', {}, { jobId: stepId, delay: 60_000 });
      const queued = async (): Promise<string[]> => (await embed.getRanges(['wait', 'prioritized', 'delayed'], 0, -1)).filter((stepId) => handedBack.includes(stepId) || stepId.startsWith(`${id}-g0-`)).sort();
      expect((await queued()).length).toBeGreaterThan(handedBack.length); // the run's own, not yet taken
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      await expect.poll(queued, { timeout: 3_000, interval: 100 }).toEqual([embedJobId(id, 1, 90, 0), embedJobId(other, 0, 90, 0)].sort());
    } finally {
      await pool.close();
      for (const stepId of handedBack) await embed.remove(stepId);
    }
  });

  it('cancel then retry at once: the cancel waits only for the stopped run\'s steps, not the new run\'s (it waited 5 s and said the output stayed leased)', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const id = await submit(world.services, 's3://out/cancel-retry/');
      const active = async (generation: number): Promise<number> =>
        (await world.services.queues[embedQueue('text-embedding-v4')].getActive()).filter((job) => job.id?.startsWith(`${id}-g${generation}-`)).length;
      const deadline = Date.now() + 20_000;
      while ((await active(0)) < 4 && Date.now() < deadline) await sleep(50);
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      expect(await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id)).toMatchObject({ retried: true, generation: 1 });
      while ((await active(1)) === 0 && Date.now() < deadline) await sleep(50);
      expect(await active(1)).toBeGreaterThan(0); // the new run's requests are on the wire (7 s each)
      const started = Date.now();
      expect(await settleStopped(world.services, id)).toBe(true);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(await active(1)).toBeGreaterThan(0);
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
    } finally {
      await pool.close();
    }
  });

  it('cancel gives the output back without waiting for embed steps (they write only to Redis), but waits for a step writing there', async () => {
    const id = await submit(world.services, 's3://out/cancel-embed-churn/');
    // Bare BullMQ workers hold one step of the job in each queue: an embed step as when workers
    // take thousands of queued ones after the cancel, each only to end it as a no-op (a 100,000-line
    // shard kept the cancel waiting 5 s and the output leased for a minute); then a write step.
    const holders: Worker[] = [];
    const releases: Array<() => void> = [];
    const hold = async (queueName: string, stepId: string): Promise<void> => {
      let started!: () => void;
      const active = new Promise<void>((resolve) => (started = resolve));
      const holder = new Worker(
        queueName,
        async () => {
          started();
          await new Promise<void>((resolve) => releases.push(resolve));
        },
        { ...queueOptions(world.settings.redisPrefix, world.services.workerConnection()), autorun: false },
      );
      holders.push(holder);
      void holder.run();
      await world.services.queues[queueName as keyof Services['queues']].add('held', {}, { jobId: stepId });
      await active;
    };
    try {
      await hold(embedQueue('text-embedding-v4'), embedJobId(id, 0, 5, 0));
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      const started = Date.now();
      expect(await settleStopped(world.services, id)).toBe(true);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(await world.services.corpora.leases.holder('s3://out/cancel-embed-churn/')).toBeUndefined();

      const writing = await submit(world.services, 's3://out/cancel-write-held/');
      await hold(QUEUES.write, writeShardJobId(writing, 0, 0));
      // Other jobs' writes taken after it: the active list was read only to its first two ids
      // (BullMQ's getRanges stops at index 1 unless told), so the cancel missed this job's and gave
      // its output back under an upload still going.
      await hold(QUEUES.write, writeShardJobId('cj-zzzzzz-abcdef', 0, 0));
      await hold(QUEUES.write, writeShardJobId('cj-zzzzzz-abcdef', 0, 1));
      expect(await cancelCorpusJob(world.services.corpora, writing)).toEqual({ cancelled: true });
      expect(await settleStopped(world.services, writing, { timeoutMs: 500 })).toBe(false);
      expect(await world.services.corpora.leases.holder('s3://out/cancel-write-held/')).toMatchObject({ jobId: writing });
    } finally {
      for (const release of releases) release();
      await Promise.all(holders.map((holder) => holder.close()));
    }
  });

  it('fails the job when every line is rejected for no reason of its own (a proxy answering 413)', async () => {
    const proxy: Server = createServer((request, response) => {
      request.resume();
      request.on('end', () => response.writeHead(413, { 'content-type': 'text/html' }).end('<html><body>413 Request Entity Too Large</body></html>'));
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const settings = loadSettings({ ...world.env, DASHSCOPE_BASE_URL: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` });
    const services = createServices(settings, createLogger({ level: 'silent' }));
    const pool = startWorkers(services, { concurrency: 8 });
    try {
      const id = await submit(services, 's3://out/proxy-413/');
      const record = await waitForJob(services, id, undefined, 30_000);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('PROVIDER_REJECTED_SYSTEMATIC');
      expect(record.error).toMatch(/HTTP 413/);
      await expect(world.s3.client.send(new HeadObjectCommand({ Bucket: 'out', Key: 'proxy-413/_SUCCESS' }))).rejects.toThrow();
    } finally {
      await pool.close();
      await services.close();
      proxy.close();
    }
  });
});
