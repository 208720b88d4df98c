import { monitorEventLoopDelay } from 'node:perf_hooks';

import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { embedQueue, QUEUES } from '../../jobs/queues.js';
import { mulberry32 } from '../../src/seeded-random.js';
import { closeTokenThread } from '../../src/tokens/token-worker.js';
import { redisConnection } from '../../workers/services.js';
import { startWorkers } from '../../workers/start-workers.js';
import { runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';

/**
 * A 1 MB line without spaces: the tokenizer's slowest case (a single 1 MB "word"; counting all of
 * it takes tens of seconds). Seeded, so every run sends the same text.
 */
function megabyteLine(): string {
  const random = mulberry32(42);
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  let line = '';
  for (let index = 0; index < 1_000_000; index++) line += alphabet[Math.floor(random() * alphabet.length)];
  return line;
}

describe('a 1 MB line', () => {
  let world: World;
  beforeAll(async () => {
    // Locks of 4 s (the world's setting): a worker whose event loop stalled longer would lose them.
    world = await startWorld({ tokenCounting: 'exact' });
    const lines = Array.from({ length: 25 }, (_, index) => `line ${index}: an ordinary sentence about rivers and ledgers.`);
    lines[5] = megabyteLine();
    await world.put('big/lines.txt', `${lines.join('\n')}\n`);
  });
  afterAll(async () => {
    await closeTokenThread();
    await world.close();
  });

  it('is truncated off the event loop: no stalled job, exactly one request per batch', async () => {
    const connection = redisConnection(world.settings);
    const events = [QUEUES.split, embedQueue('text-embedding-v4')].map((queue) => new QueueEvents(queue, { connection: connection.duplicate(), prefix: world.settings.redisPrefix }));
    const stalled: string[] = [];
    for (const queueEvents of events) queueEvents.on('stalled', ({ jobId }) => stalled.push(jobId));
    await Promise.all(events.map((queueEvents) => queueEvents.waitUntilReady()));
    world.emulator.resetStats();
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/big/', '--out', 's3://out/big/', '--output-type', 'dense']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const record = await waitForJob(world.services, submitted.stdout.trim());
      expect(record.state).toBe('completed');
      expect(record.rowsEmbedded).toBe(25);
      expect(record.rowsFailed).toBe(0);
    } finally {
      delay.disable();
      await pool.close();
      await Promise.all(events.map((queueEvents) => queueEvents.close()));
      connection.disconnect();
    }
    expect(stalled).toEqual([]);
    // 25 lines: batches of 10, 10 and 5, each sent once and accepted (the truncated line fits).
    const stats = world.emulator.stats();
    expect(stats.requests).toBe(3);
    expect(stats.byStatus).toEqual({ '200': 3 });
    // The workers share this process: its event loop never stalled anywhere near the 4 s lock.
    // (The in-process emulator's own exact count of the truncated line is the longest task here.)
    expect(delay.max / 1e6).toBeLessThan(1_500);
  });
});
