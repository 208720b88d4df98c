import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cancelCorpusJob, submitCorpusJob } from '../../jobs/enqueue.js';
import { embedQueue, QUEUES } from '../../jobs/queues.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { sleep } from '../../src/sleep.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';

/**
 * A 429 storm (another application saturating the account, DashScope's capacity throttling) can
 * outlast the ~10 minutes of attempts a step has. 429s say "later", not "broken": a step they keep
 * refusing is handed back to its queue, delayed, and uses no attempt. Before, after 20 429s in
 * process it went back to BullMQ as a failed attempt, and the 14th failed the corpus job
 * (`PROVIDER_RATE_LIMITED: … gave up after 14 attempts`). Real Redis, s3rver, the emulator
 * answering every request 429; a short in-process budget and hand-back delay so the storm passes
 * the old 20-retry cap many times over in a few seconds. The 429s are burst ones
 * (`Throttling.BurstRate`): the hand-back does not depend on the kind, and they only skip gate
 * slots, where request 429s that keep coming cut the gate's pace to seconds a request (its own
 * business, rate-gate.test.ts's), and a few hundred would take minutes.
 */
const SHARD_ROWS = 30;
const STORM = { failRate429: { requests: 0, tokens: 0, burst: 1 } };
const CALM = { failRate429: { requests: 0, tokens: 0, burst: 0 } };
const THROTTLING = { retries: 5, handBackMs: 50 };

describe('a storm of 429s', () => {
  let world: World;
  const corpus = buildCorpus('data/', { textLines: 10 });
  const folders: string[] = [];

  beforeAll(async () => {
    world = await startWorld({ faults: { ...STORM, latencyMs: { min: 1, median: 2, p99: 5 } } });
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(async () => {
    await world.close();
    for (const folder of folders) await removeFolder(folder);
  });

  const submit = (output: string): Promise<string> => {
    const { services } = world;
    const options = parseJobOptions({ input: 's3://corpus/data/', output, shardRows: SHARD_ROWS, textField: 'text', idField: 'id' });
    return submitCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() }, options);
  };
  const throttled = (): number => world.emulator.stats().byStatus['429'] ?? 0;

  it('uses no attempt of the steps it refuses and never fails the job; once it ends, the job completes exact', async () => {
    const { services } = world;
    const embed = services.queues[embedQueue('text-embedding-v4')];
    const pool = startWorkers(services, { concurrency: 4, throttling: THROTTLING });
    try {
      const before = throttled();
      const id = await submit('s3://out/storm/');
      // Every line read and its step queued, then 429s enough for each step to pass the old cap of 20 several times.
      const read = await waitForJob(services, id, (record) => record.linesRead === corpus.expected.length);
      const steps = read.batchesTotal;
      expect(steps).toBeGreaterThanOrEqual(3);
      // ~7 s alone (the gate's slow start paces the 429s); a loaded machine takes longer.
      const deadline = Date.now() + 40_000;
      while (throttled() - before < steps * 60 && Date.now() < deadline) await sleep(50);
      expect(throttled() - before).toBeGreaterThanOrEqual(steps * 60);

      const record = (await services.corpora.get(id))!;
      expect(record.state, record.error ?? '').toBe('running');
      const queued = await embed.getJobs(['waiting', 'prioritized', 'delayed', 'active']);
      // The count as the split left it: when the last line was read, its batch could still be uncounted.
      expect(queued.length).toBe(record.batchesTotal);
      expect(queued.map((step) => step.attemptsMade)).toEqual(queued.map(() => 0));
      expect(await embed.getJobCountByTypes('failed')).toBe(0);
      // `embedq status` says the job waits on rate limits, not that it is stuck or failing.
      expect(record.lastRetry).toMatch(/^embed-batch rate-limited: refused 6 times \(429\); handed back for \d+\.\d s, no attempt used: PROVIDER_RATE_LIMITED: .*Throttling\.BurstRate/);
      const status = await runEmbedq(world.env, ['status', id]);
      expect(status.stdout).toMatch(/retrying +embed-batch rate-limited: /);

      world.emulator.setFaults(CALM);
      const done = await waitForJob(services, id, undefined, 30_000);
      expect(done.state, done.error ?? '').toBe('completed');
      const { folder } = await downloadPrefix(world.s3, 'out', 'storm/');
      folders.push(folder);
      await verifyOutput(folder, corpus.expected, embeddingParameters(parseJobOptions({ input: 'x', output: 'y' })), SHARD_ROWS);
    } finally {
      world.emulator.setFaults(STORM);
      await pool.close();
    }
  });

  it('stops a handed-back step when its job is cancelled: it leaves the queue instead of coming back for more 429s', async () => {
    const { services } = world;
    const embed = services.queues[embedQueue('text-embedding-v4')];
    const pool = startWorkers(services, { concurrency: 4, throttling: { retries: 5, handBackMs: 500 } });
    try {
      const before = throttled();
      const id = await submit('s3://out/storm-cancel/');
      await waitForJob(services, id, (record) => record.linesRead === corpus.expected.length);
      while (throttled() - before < 30) await sleep(50);
      expect((await cancelCorpusJob(services.corpora, id)).cancelled).toBe(true);
      const deadline = Date.now() + 5_000;
      while ((await embed.getJobCountByTypes('waiting', 'prioritized', 'delayed', 'active')) > 0 && Date.now() < deadline) await sleep(50);
      expect(await embed.getJobCountByTypes('waiting', 'prioritized', 'delayed', 'active')).toBe(0);
      const after = throttled();
      await sleep(700);
      expect(throttled()).toBe(after);
      expect((await services.corpora.get(id))!.state).toBe('cancelled');
    } finally {
      await pool.close();
    }
  });
});
