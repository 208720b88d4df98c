import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { CopyObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { UnrecoverableError, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cancelCorpusJob, retryCorpusJob, submitCorpusJob } from '../../jobs/enqueue.js';
import { OutputLeasedError } from '../../jobs/job-errors.js';
import { EmbedBatchPayload } from '../../jobs/payloads.js';
import { embedQueue, queueOptions, QUEUES, splitJobId } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { embedBatch } from '../../workers/embed-batch.js';
import { splitCorpus } from '../../workers/split-corpus.js';
import { finalizeJob } from '../../workers/finalize-job.js';
import { startWorkers } from '../../workers/start-workers.js';
import { failCorpusJobOf, sweepFailedJobs } from '../../workers/fail-on-lost-jobs.js';
import { writeShard } from '../../workers/write-shard.js';
import { openOutput } from '../../workers/output.js';
import { fencedChunks, StaleStepError, stepFence } from '../../workers/step-fence.js';
import { describeJob, progressLine } from '../../workers/commands/progress.js';
import { toJobView } from '../../workers/dashboard/job-views.js';
import { ThroughputTracker } from '../../workers/dashboard/throughput.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { removeFolder, startWorld, waitForJob, type World } from '../support/world.js';

/**
 * Issue 9, items 3, 6, 7 and 8: steps run by hand (the processors, as BullMQ would call them) so
 * each stale or early step happens exactly when the defect needs it to.
 */
describe('fencing: stale, early and unparseable steps change nothing', () => {
  let world: World;
  const context = (): Parameters<typeof embedBatch>[1] => ({ services: world.services, logger: world.services.logger, stopping: new AbortController().signal, priority: 0 });
  const submit = (output: string, shardRows = 30): Promise<string> =>
    submitCorpusJob(
      { corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() },
      parseJobOptions({ input: 's3://corpus/data/', output, shardRows, outputType: 'dense' }),
    );
  /** The embed payloads the split queued for a job, in shard and batch order. */
  const queuedBatches = async (id: string, generation: number): Promise<EmbedBatchPayload[]> => {
    const jobs = await world.services.queues[embedQueue('text-embedding-v4')].getJobs(['waiting', 'prioritized', 'delayed'], 0, -1);
    return jobs
      .map((job) => EmbedBatchPayload.parse(job.data))
      .filter((payload) => payload.corpusJobId === id && payload.generation === generation)
      .sort((a, b) => a.shard - b.shard || a.batch - b.batch);
  };
  const writtenShards = async (id: string): Promise<number> => world.services.redis.hlen(`${world.settings.redisPrefix}:job:${id}:shards`);

  beforeAll(async () => {
    // No backpressure: the split runs to its end here without any shard being written.
    world = await startWorld({}, { EMBEDQ_MAX_OPEN_SHARDS: '100' });
    for (const object of buildCorpus('data/', { textLines: 60 }).objects) await world.put(object.key, object.body);
  });
  afterAll(() => world.close());

  it('write-shard refuses a shard whose batches are not all stored (item 3)', async () => {
    const id = await submit('s3://out/fence-incomplete/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const batches = (await queuedBatches(id, 0)).filter((payload) => payload.shard === 0);
    expect(batches.length).toBeGreaterThan(1);
    await embedBatch(batches[0]!, context()); // one of the shard's batches, not all
    await writeShard({ v: 1, corpusJobId: id, generation: 0, shard: 0 }, context());
    expect(await writtenShards(id)).toBe(0);
    expect(await world.s3.client.send(new (await import('@aws-sdk/client-s3')).ListObjectsV2Command({ Bucket: 'out', Prefix: 'fence-incomplete/part-' })).then((r) => r.KeyCount ?? 0)).toBe(0);
  });

  it('a generation-0 embed step after retry stores nothing into generation 1 (item 8)', async () => {
    const id = await submit('s3://out/fence-generation/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const stale = await queuedBatches(id, 0);
    await cancelCorpusJob(world.services.corpora, id);
    await retryCorpusJob({ corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id);
    const before = (await world.services.corpora.get(id))!;
    expect(before.generation).toBe(1);
    await embedBatch(stale[0]!, context());
    const after = (await world.services.corpora.get(id))!;
    expect(after.batchesDone).toBe(before.batchesDone);
    expect(after.rowsEmbedded).toBe(before.rowsEmbedded);
    expect(await world.services.redis.keys(`${world.settings.redisPrefix}:job:${id}:shard:*`)).toEqual([]);
  });

  it('a write of the cancelled generation is not recorded, so the retried job still finishes (item 7)', async () => {
    const id = await submit('s3://out/fence-cancel/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    for (const payload of (await queuedBatches(id, 0)).filter((batch) => batch.shard === 0)) await embedBatch(payload, context());
    // A writer found the job running and wrote its file; the cancel lands before it records the
    // shard. On main, MARK_SHARD_WRITTEN recorded it anyway, and after retry shardsWritten counted
    // it twice (the rebuilt counters plus the late record), so the job never finalized.
    const corpora = world.services.corpora;
    await cancelCorpusJob(corpora, id);
    const late = await corpora.ledger.markWritten(id, 0, {
      shard: 0, file: 'part-00000.parquet', firstRow: 0, lastRow: 29, rows: 1, bytes: 1, errors: 0, errorsKey: null, blank: 0, truncated: 0, tokens: 0, batches: 1,
    });
    expect(late).toEqual({ status: 'refused', reason: 'inactive' });
    expect(await writtenShards(id)).toBe(0);
    await retryCorpusJob({ corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id);
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const record = await waitForJob(world.services, id);
      expect(record.state).toBe('completed');
      expect(record.shardsWritten).toBe(record.totalShards);
      expect(record.rowsEmbedded + record.rowsBlank + record.rowsFailed).toBe(record.totalLines);
    } finally {
      await pool.close();
    }
  });

  it('a retried job records how long its stopped generation ran and what it processed, so its average leaves out the time it stood cancelled and keeps the lines it embeds again', async () => {
    const id = await submit('s3://out/fence-active-time/');
    const corpora = world.services.corpora;
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    // Two batches of an open shard: their lines leave the count at the retry, to be embedded again.
    for (const payload of (await queuedBatches(id, 0)).slice(0, 2)) await embedBatch(payload, context());
    await new Promise((resolve) => setTimeout(resolve, 300));
    await cancelCorpusJob(corpora, id);
    const cancelled = (await corpora.get(id))!;
    const processedBefore = cancelled.rowsEmbedded + cancelled.rowsFailed + cancelled.rowsBlank;
    expect(processedBefore).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // stood cancelled
    await retryCorpusJob({ corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() }, id);
    const queued = (await corpora.get(id))!;
    expect(queued).toMatchObject({ state: 'queued', generation: 1, resumedAt: null, startedAt: cancelled.startedAt, activeMs: cancelled.finishedAt! - cancelled.resumedAt! });
    expect(queued.activeMs).toBeGreaterThanOrEqual(300);
    expect(queued).toMatchObject({ rowsEmbedded: 0, rowsFailed: 0, rowsBlank: 0, linesRedone: processedBefore });
    await splitCorpus({ v: 1, corpusJobId: id, generation: 1 }, context());
    await embedBatch((await queuedBatches(id, 1))[0]!, context());
    const running = (await corpora.get(id))!;
    expect(running.resumedAt).toBeGreaterThan(cancelled.finishedAt! + 1_400);
    const now = Date.now();
    const view = toJobView(running, { requests: 0, throttled: 0 }, new ThroughputTracker(), [], now);
    expect(view.linesDone).toBeGreaterThan(0);
    expect(view.throughputAverage).toBeCloseTo((view.linesDone + processedBefore) / ((running.activeMs + now - running.resumedAt!) / 1000), 6);
  });

  it("a job Redis brought back from an older snapshot leaves alone the output another job finished there since (it removed its _SUCCESS and replaced its shards)", async () => {
    const { s3 } = world;
    /** The output's files and their bytes. */
    const files = async (prefix: string): Promise<Map<string, string>> => {
      const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: 'out', Prefix: prefix }));
      const result = new Map<string, string>();
      for (const { Key } of listed.Contents ?? []) {
        const body = await s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: Key! }));
        result.set(Key!.slice(prefix.length), Buffer.from(await body.Body!.transformToByteArray()).toString('base64'));
      }
      return result;
    };
    /** What storage holds after the newer job B ran there to completion: its files, copied in. */
    const finishOtherRunIn = async (prefix: string): Promise<Map<string, string>> => {
      for (const key of (await files('fence-newer/')).keys()) {
        await s3.client.send(new CopyObjectCommand({ Bucket: 'out', CopySource: `out/fence-newer/${key}`, Key: `${prefix}${key}` }));
      }
      return files(prefix);
    };
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const newer = await submit('s3://out/fence-newer/');
      expect((await waitForJob(world.services, newer)).state).toBe('completed');
    } finally {
      await pool.close();
    }
    // Revived before its split: the split finds the other run's manifest.
    const beforeSplit = await submit('s3://out/fence-revived-split/');
    const theirs = await finishOtherRunIn('fence-revived-split/');
    expect(theirs.has('_SUCCESS')).toBe(true);
    await expect(splitCorpus({ v: 1, corpusJobId: beforeSplit, generation: 0 }, context())).rejects.toMatchObject({ code: 'OUTPUT_NOT_EMPTY', message: expect.stringContaining('holds the finished run of job cj-') });
    expect(await files('fence-revived-split/')).toEqual(theirs);
    // Revived after its split, with its batches embedded: its shard writer finds it.
    const afterSplit = await submit('s3://out/fence-revived-write/');
    await splitCorpus({ v: 1, corpusJobId: afterSplit, generation: 0 }, context());
    for (const payload of (await queuedBatches(afterSplit, 0)).filter((batch) => batch.shard === 0)) await embedBatch(payload, context());
    const theirsToo = await finishOtherRunIn('fence-revived-write/');
    await expect(writeShard({ v: 1, corpusJobId: afterSplit, generation: 0, shard: 0 }, context())).rejects.toMatchObject({ code: 'OUTPUT_NOT_EMPTY' });
    expect(await files('fence-revived-write/')).toEqual(theirsToo);
  });

  it("a step paused past its lock writes nothing once its job has ended: the fence just before a file appears (it replaced a newer job's shard)", async () => {
    const corpora = world.services.corpora;
    const id = await submit('s3://out/fence-paused/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context()); // running now
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-fence-'));
    try {
      const stores = [
        { name: 'local', ...openOutput(`${folder}/out/`, world.services) },
        { name: 's3', ...openOutput('s3://out/fence-paused/', world.services) },
      ];
      for (const { name, store, prefix } of stores) {
        const fence = stepFence(corpora, id, 0);
        // The job ends while the file is being written (another worker finished it meanwhile).
        const body = async function* (): AsyncGenerator<Uint8Array> {
          yield Buffer.from('first part of a shard ');
          await corpora.jobs.markCompleted(id, 0);
          yield Buffer.from('and the rest');
        };
        await expect(store.writeStream(`${prefix}part-00000.parquet`, fencedChunks(body(), fence)), name).rejects.toBeInstanceOf(StaleStepError);
        expect(await store.stat(`${prefix}part-00000.parquet`), name).toBeUndefined();
        await expect(fence(), name).rejects.toThrow(`job ${id} is completed in generation 0, not running in generation 0`);
      }
      // Nothing left half written either (a temp file, an upload).
      expect(await readdir(path.join(folder, 'out'))).toEqual([]);
    } finally {
      await removeFolder(folder);
    }
  });

  it("finalize trusts a _SUCCESS only beside its own manifest: a paused finalize of another job put one there", async () => {
    const id = await submit('s3://out/fence-stray-success/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const batches = await queuedBatches(id, 0);
    for (const payload of batches) await embedBatch(payload, context());
    for (const shard of new Set(batches.map((payload) => payload.shard))) await writeShard({ v: 1, corpusJobId: id, generation: 0, shard }, context());
    // The stray marker lands after the split removed any earlier one, before this job's finalize.
    await world.s3.client.send(new PutObjectCommand({ Bucket: 'out', Key: 'fence-stray-success/_SUCCESS', Body: '' }));
    await finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context());
    expect((await world.services.corpora.get(id))!.state).toBe('completed');
    const manifest = await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'fence-stray-success/_manifest.json' }));
    expect(JSON.parse(await manifest.Body!.transformToString())).toMatchObject({ job_id: id });
    await world.s3.client.send(new GetObjectCommand({ Bucket: 'out', Key: 'fence-stray-success/_errors.jsonl' }));
  });

  it.each(['_errors.jsonl', '_SUCCESS'])("a finalize paused between its last check and writing %s withdraws what it wrote once it finds another job took the output", async (file) => {
    const { corpora, redis } = world.services;
    const prefix = `fence-paused-final${file.replace(/[^a-z]/gi, '-').toLowerCase()}/`;
    const id = await submit(`s3://out/${prefix}`);
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    const batches = await queuedBatches(id, 0);
    for (const payload of batches) await embedBatch(payload, context());
    for (const shard of new Set(batches.map((payload) => payload.shard))) await writeShard({ v: 1, corpusJobId: id, generation: 0, shard }, context());
    // The pause: just before the request leaves, another worker completes the job and a newer job
    // takes the output (its submit cleared it; it is still being written).
    const client = await world.services.s3();
    client.middlewareStack.add(
      (next, handlerContext) => async (args) => {
        const key = (args.input as { Key?: string }).Key;
        if (handlerContext.commandName === 'PutObjectCommand' && key === `${prefix}${file}`) {
          client.middlewareStack.remove('paused-finalize');
          await corpora.jobs.markCompleted(id, 0);
          await redis.set(corpora.keys.takenOf(corpora.leases.keyOf(`s3://out/${prefix}`)), 'cj-newer');
        }
        return next(args);
      },
      { step: 'initialize', name: 'paused-finalize' },
    );
    await expect(finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context())).rejects.toBeInstanceOf(StaleStepError);
    // What finalize wrote is gone (the scratch files under _tmp/ are the newer job's submit's to clear).
    const left = await world.s3.client.send(new ListObjectsV2Command({ Bucket: 'out', Prefix: prefix }));
    const names = (left.Contents ?? []).map((object) => object.Key!.slice(prefix.length));
    expect(names.filter((name) => !name.startsWith('_tmp/') && !name.startsWith('part-'))).toEqual([]);
  });

  it('a cancel while finalize writes the output is refused, so no second job takes the output mid-write', async () => {
    const output = 's3://out/fence-finalize/';
    const id = await submit(output);
    const corpora = world.services.corpora;
    // Just before finalize puts `_SUCCESS`, an operator cancels the job and submits another run
    // with --overwrite into the same output. Before the claim, the cancel won: the record said
    // cancelled beside a `_SUCCESS`, and the second job, given the lease, cleared the files
    // finalize was vouching for.
    let attempt: Promise<{ cancel: Awaited<ReturnType<typeof cancelCorpusJob>>; second: unknown }> | undefined;
    const client = await world.services.s3();
    client.middlewareStack.add(
      (next, { commandName }) => async (args) => {
        const input = args.input as { Key?: string };
        if (commandName === 'PutObjectCommand' && input.Key === 'fence-finalize/_SUCCESS' && !attempt) {
          attempt = (async () => ({
            cancel: await cancelCorpusJob(corpora, id),
            second: await submitCorpusJob(
              { corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => client },
              parseJobOptions({ input: 's3://corpus/data/', output, shardRows: 30, outputType: 'dense' }),
              { overwrite: true },
            ).catch((error: unknown) => error),
          }))();
          await attempt;
        }
        return next(args);
      },
      { step: 'initialize', name: 'cancelBeforeSuccess' },
    );
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const record = await waitForJob(world.services, id);
      expect(attempt).toBeDefined();
      const { cancel, second } = await attempt!;
      expect(cancel).toEqual({ cancelled: false, message: expect.stringMatching(/finishing/) });
      expect(second).toBeInstanceOf(OutputLeasedError);
      expect(record.state).toBe('completed');
      const keys = await world.s3.client.send(new ListObjectsV2Command({ Bucket: 'out', Prefix: 'fence-finalize/' })).then((r) => (r.Contents ?? []).map((o) => o.Key));
      expect(keys).toEqual(expect.arrayContaining(['fence-finalize/_SUCCESS', 'fence-finalize/_manifest.json', 'fence-finalize/part-00000.parquet', 'fence-finalize/part-00001.parquet']));
      expect(await corpora.leases.holder(output)).toBeUndefined();
    } finally {
      client.middlewareStack.remove('cancelBeforeSuccess');
      await pool.close();
    }
  });

  it('a finalize attempt that fails gives its claim back: the job can be cancelled before the next attempt', async () => {
    const id = await submit('s3://out/fence-finalize-failed/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    // No shard is written yet, so this attempt throws after claiming the job.
    await expect(finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context())).rejects.toThrow(/finalize found 0 of \d+ shards/);
    expect(await world.services.corpora.get(id)).toMatchObject({ state: 'running', finishing: false });
    expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
    // The next attempt finds the job cancelled and writes nothing.
    await finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context());
    expect(await world.services.corpora.state(id)).toBe('cancelled');
  });

  it('a finalize attempt that fails after _SUCCESS keeps its claim: no cancel under a complete output, and the next attempt completes it', async () => {
    const id = await submit('s3://out/fence-after-success/');
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    for (const payload of await queuedBatches(id, 0)) await embedBatch(payload, context());
    const record = (await world.services.corpora.get(id))!;
    for (let shard = 0; shard < record.totalShards!; shard += 1) await writeShard({ v: 1, corpusJobId: id, generation: 0, shard }, context());
    // The scratch files' cleanup, after `_SUCCESS`, fails once (a storage blip).
    const client = await world.services.s3();
    let failed = false;
    client.middlewareStack.add(
      (next, { commandName }) =>
        async (args) => {
          const { Prefix } = args.input as { Prefix?: string };
          if (commandName === 'ListObjectsV2Command' && Prefix === `fence-after-success/_tmp/${id}/` && !failed) {
            failed = true;
            throw new Error('storage blip');
          }
          return next(args);
        },
      { step: 'initialize', name: 'failAfterSuccess' },
    );
    try {
      await expect(finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context())).rejects.toThrow(/storage blip/);
    } finally {
      client.middlewareStack.remove('failAfterSuccess');
    }
    const keys = await world.s3.client.send(new ListObjectsV2Command({ Bucket: 'out', Prefix: 'fence-after-success/' })).then((r) => (r.Contents ?? []).map((o) => o.Key));
    expect(keys).toContain('fence-after-success/_SUCCESS');
    // Status says why a cancel would be refused.
    const finishing = (await world.services.corpora.get(id))!;
    expect(finishing).toMatchObject({ state: 'running', finishing: true });
    expect(describeJob(finishing)).toMatch(/^state {5}running · finishing: every shard is written/m);
    expect(progressLine(finishing)).toMatch(/^finishing \[/);
    expect(toJobView(finishing, { requests: 0, throttled: 0 }, new ThroughputTracker(), [])).toMatchObject({ state: 'running', finishing: true });
    // The output is complete: cancelling now would leave `_SUCCESS` beside a cancelled record.
    expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: false, message: expect.stringMatching(/finishing/) });
    await finalizeJob({ v: 1, corpusJobId: id, generation: 0 }, context());
    expect(await world.services.corpora.get(id)).toMatchObject({ state: 'completed', finishing: false });
  });

  it('a shard still uploading when its job is cancelled: the output stays leased until it lands, so an --overwrite run cannot get a stale file', async () => {
    const output = 's3://out/stale-write/';
    const id = await submit(output);
    await splitCorpus({ v: 1, corpusJobId: id, generation: 0 }, context());
    for (const payload of await queuedBatches(id, 0)) await embedBatch(payload, context());
    await writeShard({ v: 1, corpusJobId: id, generation: 0, shard: 0 }, context());
    // Shard 1's upload is slow (a large shard, a slow store): it is held until released.
    const client = await world.services.s3();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const uploading = new Promise<void>((resolve) => (reached = resolve));
    client.middlewareStack.add(
      (next, { commandName }) =>
        async (args) => {
          if (commandName === 'PutObjectCommand' && (args.input as { Key?: string }).Key === 'stale-write/part-00001.parquet') {
            reached();
            await held;
          }
          return next(args);
        },
      { step: 'initialize', name: 'slowUpload' },
    );
    try {
      const writing = writeShard({ v: 1, corpusJobId: id, generation: 0, shard: 1 }, context());
      await uploading;
      expect(await cancelCorpusJob(world.services.corpora, id)).toEqual({ cancelled: true });
      // The operator fixes an option and runs again into the same output. Before, this was
      // accepted: its --overwrite cleared the output, then the cancelled job's part-00001 landed
      // in it, and a run of one shard completed beside that stale file.
      const rerun = parseJobOptions({ input: 's3://corpus/data/', output, shardRows: 1_000, outputType: 'dense', dimension: 128 });
      const deps = { corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => client };
      const refused = await submitCorpusJob(deps, rerun, { overwrite: true }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(OutputLeasedError);
      expect((refused as Error).message).toMatch(new RegExp(`job ${id} stopped moments ago`));
      release();
      await writing;
      // `embedq cancel` gives the output back once none of the job's steps is active.
      await world.services.corpora.leases.releaseEnding(output, id);
      const second = await submitCorpusJob(deps, rerun, { overwrite: true });
      const pool = startWorkers(world.services, { concurrency: 4 });
      try {
        expect(await waitForJob(world.services, second)).toMatchObject({ state: 'completed', totalShards: 1 });
      } finally {
        await pool.close();
      }
      const keys = await world.s3.client.send(new ListObjectsV2Command({ Bucket: 'out', Prefix: 'stale-write/' })).then((r) => (r.Contents ?? []).map((o) => o.Key));
      expect(keys.filter((key) => key?.includes('part-'))).toEqual(['stale-write/part-00000.parquet']);
    } finally {
      release();
      client.middlewareStack.remove('slowUpload');
    }
  });

  it('a step BullMQ fails outside the processor (unparseable payload) fails the corpus job with the reason (item 6)', async () => {
    const id = await submit('s3://out/fence-payload/');
    const split = world.services.queues[QUEUES.split];
    await split.remove(splitJobId(id, 0));
    await split.add('split-corpus', { v: 1, corpusJobId: id, generation: 'zero' }, { jobId: `${id}-broken`, attempts: 1 });
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const record = await waitForJob(world.services, id, (r) => r.state !== 'queued' && r.state !== 'running', 15_000);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('INVALID_PAYLOAD');
      expect(record.error).toMatch(/generation/);
    } finally {
      await pool.close();
    }
  });

  it('a step BullMQ failed where no processor of ours saw it, while no worker of ours ran, fails the corpus job once one starts (item 6)', async () => {
    const id = await submit('s3://out/fence-unseen/');
    // BullMQ's stalled-job check fails a step past its stall limit inside its own script, in
    // whichever worker runs the check: here a bare BullMQ worker, so nothing of ours hears of it.
    const other = new Worker(
      QUEUES.split,
      async () => {
        throw new UnrecoverableError('job stalled more than allowable limit');
      },
      { ...queueOptions(world.settings.redisPrefix, world.services.workerConnection()), autorun: false },
    );
    const failed = new Promise<void>((resolve) => other.once('failed', () => resolve()));
    void other.run();
    await failed;
    await other.close();
    expect(await world.services.corpora.state(id)).toBe('queued');

    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const record = await waitForJob(world.services, id, (r) => r.state !== 'queued' && r.state !== 'running', 15_000);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('JOB_STALLED');
      expect(record.error).toContain('stalled more than allowable limit');
    } finally {
      await pool.close();
    }

    // The sweeps' cursor passes failures once they are older than a few seconds, never fresh ones
    // (a worker's clock a little behind could still add one there).
    const sweepKeys = `${world.settings.redisPrefix}:failed-sweep`;
    const longAgo = Date.now() - 60_000;
    await world.services.redis.zadd(world.services.queues[QUEUES.split].keys.failed!, longAgo, splitJobId(id, 0));
    await world.services.redis.del(`${sweepKeys}:lock`);
    await sweepFailedJobs(world.services, [QUEUES.split]).close();
    const cursor = Number(await world.services.redis.get(`${sweepKeys}:cursor:${QUEUES.split}`));
    expect(cursor).toBeGreaterThan(longAgo);
    expect(cursor).toBeLessThanOrEqual(Date.now() - 10_000 + 1);
  });

  it('a step BullMQ failed for stalling too often fails the corpus job, but only in its generation (item 6)', async () => {
    const id = await submit('s3://out/fence-stalled/');
    const stalled = { id: `${id}-g0-s0-b0`, name: 'embed-batch', data: { v: 1, corpusJobId: id, generation: 0 }, opts: { attempts: 14 }, attemptsMade: 3 };
    // A step of an older generation changes nothing.
    await failCorpusJobOf(world.services, { ...stalled, data: { ...stalled.data, generation: 7 } }, 'job stalled more than allowable limit', world.services.logger);
    expect(await world.services.corpora.state(id)).toBe('queued');
    // A retryable failure with attempts left is not the end of the job either.
    await failCorpusJobOf(world.services, stalled, 'PROVIDER_UNAVAILABLE: HTTP 503', world.services.logger);
    expect(await world.services.corpora.state(id)).toBe('queued');
    await failCorpusJobOf(world.services, stalled, 'job stalled more than allowable limit', world.services.logger);
    const record = (await world.services.corpora.get(id))!;
    expect(record.state).toBe('failed');
    expect(record.errorCode).toBe('JOB_STALLED');
    expect(record.error).toContain('stalled more than allowable limit');
    // The end of the job gives its output back, after a minute in which its steps still writing finish.
    expect(await world.services.corpora.leases.holder('s3://out/fence-stalled/')).toEqual({ jobId: id, ending: true });
    expect(await world.services.redis.pttl(world.services.corpora.leases.keyOf('s3://out/fence-stalled/'))).toBeGreaterThan(50_000);
  });
});
