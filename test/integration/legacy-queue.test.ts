import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { embedQueue, LEGACY_EMBED_QUEUE } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { sleep } from '../../src/sleep.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { startDashboard } from '../support/dashboard.js';
import { embeddingParameters } from '../support/embedding-parameters.js';
import { verifyOutput } from '../support/verify-output.js';
import { downloadPrefix, removeFolder, runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';

/**
 * A rolling upgrade: versions before the per-model queues queued embed steps in one queue, `embed`.
 * An older worker stopped mid-run hands its steps back there. Real Redis, s3rver, the emulator,
 * workers in-process; the older version's steps are this version's, moved where it put them.
 */
const SHARD_ROWS = 40;

describe('steps an older version queued in the legacy embed queue', () => {
  let world: World;
  const corpus = buildCorpus('data/', { textLines: 120 });
  let folder: string | undefined;

  beforeAll(async () => {
    world = await startWorld({ faults: { latencyMs: { min: 5, median: 10, p99: 30 } } });
    for (const object of corpus.objects) await world.put(object.key, object.body);
  });
  afterAll(async () => {
    await world.close();
    if (folder) await removeFolder(folder);
  });

  it('are taken by workers of this version: the run completes exact (it stood still for good, and a schedule skipped every tick behind it)', async () => {
    const { services } = world;
    const v4 = services.queues[embedQueue('text-embedding-v4')];
    const legacy = services.queues[LEGACY_EMBED_QUEUE];
    // No worker takes the new queue's steps until they have been moved.
    await v4.pause();
    const pool = startWorkers(services, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/legacy/', '--shard-rows', String(SHARD_ROWS), '--text-field', 'text', '--id-field', 'id']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      // The split queues the two open shards' steps, then waits for room (a shard written).
      const queued = async (): Promise<number> => v4.getJobCountByTypes('waiting', 'prioritized', 'delayed');
      let seen = -1;
      for (let steady = 0; steady < 3; steady += 1) {
        await sleep(300);
        const now = await queued();
        if (now === 0 || now !== seen) steady = -1;
        seen = now;
      }
      const steps = await v4.getJobs(['waiting', 'prioritized', 'delayed']);
      expect(steps.length).toBeGreaterThanOrEqual(4);
      // Held there a moment, to read what KEDA and the dashboard see of them.
      await legacy.pause();
      for (const step of steps) {
        await legacy.add(step.name, step.data, { jobId: step.id, priority: step.opts.priority, attempts: step.opts.attempts, backoff: step.opts.backoff });
        await step.remove();
      }
      const dashboard = await startDashboard(services);
      try {
        // Before: 0, so KEDA scaled no worker up for steps waiting only there.
        const queues = (await (await fetch(`${dashboard.url}/api/queues`)).json()) as Record<string, { backlog: number }>;
        expect(queues.embed?.backlog).toBe(steps.length);
        expect(queues[embedQueue('text-embedding-v4')]?.backlog).toBe(0);
        const metrics = await (await fetch(`${dashboard.url}/metrics`)).text();
        expect(metrics).toMatch(new RegExp(`^embedq_embed_backlog ${steps.length}$`, 'm'));
        expect(metrics).toMatch(new RegExp(`^embedq_queue_jobs\\{queue="embed",state="prioritized"\\} ${steps.length}$`, 'm'));
        // BullMQ's own count, which the README says to read, has it too.
        expect(metrics).toMatch(new RegExp(`^bullmq_job_count\\{queue="embed",state="prioritized"\\} ${steps.length}$`, 'm'));
      } finally {
        await dashboard.close();
      }
      await legacy.resume();
      await v4.resume();
      const record = await waitForJob(services, id, undefined, 60_000);
      expect(record.state, record.error ?? '').toBe('completed');
      expect(await legacy.getJobCountByTypes('waiting', 'prioritized', 'active', 'delayed')).toBe(0);
      const downloaded = await downloadPrefix(world.s3, 'out', 'legacy/');
      folder = downloaded.folder;
      await verifyOutput(folder, corpus.expected, embeddingParameters(parseJobOptions({ input: 'x', output: 'y' })), SHARD_ROWS);
    } finally {
      await v4.resume();
      await legacy.resume();
      await pool.close();
    }
  });
});
