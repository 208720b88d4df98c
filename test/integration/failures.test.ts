import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { gzipSync } from 'node:zlib';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { createServices } from '../../workers/services.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus, MODERATION_WORD } from '../support/corpus-fixture.js';
import { queryParquet } from '../support/duckdb.js';
import { startHoldingProxy } from '../support/holding-proxy.js';
import { rewriteText, startRewritingProxy } from '../support/rewriting-proxy.js';
import { downloadPrefix, removeFolder, runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';
import { loadSettings } from '../../src/config.js';
import { sleep } from '../../src/sleep.js';
import type { Manifest } from '../../src/output/manifest.js';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

describe('failures that stop a job, and bad input', () => {
  let world: World;
  let failedJobId = '';
  beforeAll(async () => {
    world = await startWorld({ apiKey: 'sk-the-right-key', faults: { latencyMs: { min: 20, median: 30, p99: 60 } } }, { DASHSCOPE_API_KEY: 'sk-the-right-key' });
    const corpus = buildCorpus('data/', { textLines: 400 });
    for (const object of corpus.objects) await world.put(object.key, object.body);
    await world.put('long/only.txt', `short line\n${'9 '.repeat(9000)}\nanother short line\n`);
    // Shard 1 of 10-line shards is one line the provider refuses: a batch of no rows.
    await world.put('broken-answers/corpus.txt', `${Array.from({ length: 50 }, (_, index) => `line number ${index} of a corpus a broken proxy answers for`).join('\n')}\n`);
    // 4,000 lines gzipped, two bytes flipped mid-stream: zlib finds it at the checksum, after the lines went out.
    const damaged = Buffer.from(gzipSync(`${Array.from({ length: 4_000 }, (_, index) => `${index} ${'abcdefghijklmnopqrstuvwxyz'.repeat(2)}${index * 7919}`).join('\n')}\n`));
    damaged[damaged.length >> 1]! ^= 1;
    damaged[(damaged.length >> 1) + 1]! ^= 1;
    await world.put('damaged-gzip/u.txt.gz', damaged);
    // Every line has "content", none "text" (the default --text-field): a mistyped field.
    const docs = (count: number): string => Array.from({ length: count }, (_, index) => JSON.stringify({ doc_id: `d${index}`, content: `document ${index}` })).join('\n');
    await world.put('no-text-field/small.jsonl', docs(25));
    await world.put('no-text-field-big/big.jsonl', docs(5_000));
    await world.put('json-document/export.json', JSON.stringify(Array.from({ length: 20 }, (_, index) => ({ id: index, text: `document ${index}` })), null, 2));
    await world.put('text-field-late/docs.jsonl', `${docs(999)}\n${JSON.stringify({ text: 'the one line with text' })}\n`);
    await world.put('refused/corpus.txt', `${Array.from({ length: 10 }, (_, index) => `line ${index}`).join('\n')}\nplease ${MODERATION_WORD} this\n`);
  });
  afterAll(() => world.close());

  it('stops the whole job quickly on a bad API key instead of trying every batch', async () => {
    const settings = loadSettings({ ...world.env, DASHSCOPE_API_KEY: 'sk-wrong-key' });
    const lines: string[] = [];
    const services = createServices(settings, createLogger({ level: 'debug' }, { write: (line: string) => void lines.push(line) }));
    const pool = startWorkers(services, { concurrency: 4 });
    try {
      const id = await submitCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() }, parseJobOptions({ input: 's3://corpus/data/', output: 's3://out/badkey/' }));
      failedJobId = id;
      const record = await waitForJob(services, id);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('PROVIDER_ACCOUNT');
      expect(record.error).toMatch(/InvalidApiKey/);
      expect(record.error).not.toMatch(/sk-wrong-key/);
      // Which worker met it: one with a key of its own fails the jobs of a fleet whose key is right.
      expect(record.error).toContain(` on ${hostname()}:${process.pid}: `);
      // The worker that failed it gives the output back once the job's steps have stopped, so a
      // fixed run can go into the same output at once (before, it was refused for a minute).
      const leaseFreeBy = Date.now() + 5_000;
      while ((await services.corpora.leases.holder('s3://out/badkey/')) !== undefined && Date.now() < leaseFreeBy) await sleep(50);
      expect(await services.corpora.leases.holder('s3://out/badkey/')).toBeUndefined();
      // Each log line names each field once: the job logger's bindings were repeated by the call
      // (two "corpusJobId" keys, which strict JSON readers refuse).
      await expect.poll(() => lines.some((line) => line.includes('output of the failed job given back'))).toBe(true);
      for (const line of lines) expect(repeatedKeys(line), line).toEqual([]);
      const status = await runEmbedq({ ...world.env }, ['status', id]);
      expect(status.stdout).toMatch(/state +failed — PROVIDER_ACCOUNT: .*InvalidApiKey/);
      // The same through `submit --wait`: it reports the failure and exits 1.
      const waited = await runEmbedq({ ...world.env, DASHSCOPE_API_KEY: 'sk-wrong-key' }, ['submit', 's3://corpus/data/', '--out', 's3://out/badkey2/', '--wait']);
      expect(waited.code).toBe(1);
      expect(waited.stderr).toMatch(/failed: PROVIDER_ACCOUNT/);
    } finally {
      await pool.close();
      await services.close();
    }
    // ~45 batches were queued; only the ones already in flight reached the server.
    expect(world.emulator.stats().byStatus['401'] ?? 0).toBeLessThanOrEqual(8);
  });

  it('resumes the failed job with `embedq retry` once the key is fixed, and finishes it whole', async () => {
    expect(failedJobId).not.toBe('');
    const before = (await world.services.corpora.get(failedJobId))!;
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const retried = await runEmbedq(world.env, ['retry', failedJobId]);
      expect(retried.code, retried.stderr).toBe(0);
      const record = await waitForJob(world.services, failedJobId);
      expect(record.state).toBe('completed');
      expect(record.generation).toBe(before.generation + 1);
      expect(record.rowsEmbedded + record.rowsBlank + record.rowsFailed).toBe(record.totalLines);
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'badkey/');
    const manifest = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
    expect(manifest.counts.lines).toBe(manifest.counts.embedded + manifest.counts.skipped_blank + manifest.counts.failed);
    expect(manifest.counts.embedded).toBeGreaterThan(380);
    await removeFolder(folder);
    // Nothing left to retry, and a completed job cannot be cancelled.
    expect((await runEmbedq(world.env, ['retry', failedJobId])).code).toBe(1);
    expect((await runEmbedq(world.env, ['cancel', failedJobId])).code).toBe(1);
  });

  it('cancels a running job: its queued work becomes no-ops and its buffers are freed', async () => {
    world.emulator.setFaults({ latencyMs: { min: 300, median: 400, p99: 600 } });
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/cancel/', '--shard-rows', '50']);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.batchesDone >= 2);
      const cancelled = await runEmbedq(world.env, ['cancel', id]);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      const record = (await world.services.corpora.get(id))!;
      expect(record.state).toBe('cancelled');
      const requestsAtCancel = world.emulator.stats().requests;
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // Only requests already in flight finish (a batch being bisected stops too); nothing new is
      // sent, and no buffer is left behind.
      expect(world.emulator.stats().requests - requestsAtCancel).toBeLessThanOrEqual(2);
      expect(await world.services.redis.keys(`${world.settings.redisPrefix}:job:${id}:shard:*`)).toEqual([]);
      expect((await world.services.corpora.get(id))!.state).toBe('cancelled');
      // A cancelled job can be resumed: written shards stay, the rest is redone, counts add up.
      world.emulator.setFaults({ latencyMs: { min: 5, median: 10, p99: 20 } });
      expect((await runEmbedq(world.env, ['retry', id])).code).toBe(0);
      const finished = await waitForJob(world.services, id);
      expect(finished.state).toBe('completed');
      const { folder } = await downloadPrefix(world.s3, 'out', 'cancel/');
      const manifest = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
      const expected = buildCorpus('data/', { textLines: 400 }).expected;
      const count = (...kinds: string[]): number => expected.filter((line) => kinds.includes(line.kind)).length;
      expect(manifest.counts).toEqual({
        lines: expected.length,
        embedded: count('text'),
        skipped_blank: count('blank'),
        failed: count('error', 'rejected'),
        truncated: 0,
      });
      expect(manifest.shards).toHaveLength(9);
      await removeFolder(folder);
    } finally {
      await pool.close();
      world.emulator.setFaults({ latencyMs: { min: 20, median: 30, p99: 60 } });
    }
  });

  it("cuts a cancelled job's shard upload at once: held by a slow S3, it landed in the next run's completed output", async () => {
    const output = 's3://out/held-upload/';
    const proxy = await startHoldingProxy(world.s3.endpoint, ({ method, url }) => method === 'PUT' && url.startsWith('/out/held-upload/part-00000'));
    const throughProxy = createServices(loadSettings({ ...world.env, AWS_ENDPOINT_URL_S3: proxy.url }), createLogger({ level: 'silent' }));
    const pool = startWorkers(throughProxy, { concurrency: 4 });
    try {
      const first = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '250', '--dimension', '64', '--output-type', 'dense']);
      expect(first.code, first.stderr).toBe(0);
      await vi.waitFor(() => expect(proxy.held).toHaveLength(1), { timeout: 20_000, interval: 50 });
      const cancelling = Date.now();
      const cancelled = await runEmbedq(world.env, ['cancel', first.stdout.trim()]);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      // The worker's stop watch cut the request, so its step ended and the output was given back
      // (not "stays leased for a minute", after which the PUT could still land).
      await vi.waitFor(() => expect(proxy.held[0]!.clientGoneAt).toBeDefined(), { timeout: 3_000, interval: 50 });
      expect(proxy.held[0]!.clientGoneAt! - cancelling).toBeLessThan(3_000);
      expect(cancelled.stderr).toBe(`cancelled ${first.stdout.trim()}\n`);
    } finally {
      await pool.close();
      await throughProxy.close();
    }
    const direct = startWorkers(world.services, { concurrency: 4 });
    try {
      const second = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '250', '--dimension', '128', '--output-type', 'dense', '--overwrite']);
      expect(second.code, second.stderr).toBe(0);
      expect((await waitForJob(world.services, second.stdout.trim())).state).toBe('completed');
      // What the held PUT would have stored, had its client still been there.
      proxy.release();
      await sleep(500);
      const { folder } = await downloadPrefix(world.s3, 'out', 'held-upload/');
      const embedded = buildCorpus('data/', { textLines: 400 }).expected.filter((line) => line.kind === 'text').length;
      const rows = await queryParquet(`SELECT count(*) AS n, min(len(dense)) AS low, max(len(dense)) AS high FROM read_parquet('${folder}/part-*.parquet')`);
      expect(rows).toEqual([{ n: BigInt(embedded), low: 128n, high: 128n }]);
      await removeFolder(folder);
    } finally {
      await direct.close();
      await proxy.close();
    }
  });

  it('gives up a shard PUT S3 never answers and retries it: the job stayed at 0 lines/s for minutes without a word', async () => {
    // Every attempt the SDK makes of the first upload is held: the timeout reaches the step.
    const proxy = await startHoldingProxy(world.s3.endpoint, ({ method, url }) => method === 'PUT' && url.startsWith('/out/hung-put/part-00000'), 3);
    const log: Array<Record<string, unknown>> = [];
    const throughProxy = createServices(
      loadSettings({ ...world.env, AWS_ENDPOINT_URL_S3: proxy.url, S3_TIMEOUT_MS: '1000' }),
      createLogger({ level: 'warn' }, { write: (line: string) => void log.push(JSON.parse(line) as Record<string, unknown>) }),
    );
    const pool = startWorkers(throughProxy, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/hung-put/', '--shard-rows', '250', '--dimension', '64']);
      expect(submitted.code, submitted.stderr).toBe(0);
      expect((await waitForJob(world.services, submitted.stdout.trim(), undefined, 15_000)).state).toBe('completed');
      expect(proxy.held).toHaveLength(3);
      expect(log).toContainEqual(
        expect.objectContaining({ msg: 'job attempt failed; will retry', code: 'STORAGE_UNAVAILABLE', reason: expect.stringMatching(/^write s3:\/\/out\/hung-put\/part-00000\.parquet: TimeoutError/) }),
      );
      const { folder } = await downloadPrefix(world.s3, 'out', 'hung-put/');
      const embedded = buildCorpus('data/', { textLines: 400 }).expected.filter((line) => line.kind === 'text').length;
      expect(await queryParquet(`SELECT count(*) AS n FROM read_parquet('${folder}/part-*.parquet')`)).toEqual([{ n: BigInt(embedded) }]);
      await removeFolder(folder);
    } finally {
      await pool.close();
      await throughProxy.close();
      await proxy.close();
    }
  });

  /**
   * A job over `s3://corpus/data/` into a fresh local folder, 50 rows a shard, on slow answers: `run`
   * gets it once `shards` shards are written, the job still running, with answers fast again once
   * it says so. The output must end exact.
   */
  const withJobMidway = async (shards: number, run: (id: string, output: string, fastAgain: () => void) => Promise<void>): Promise<void> => {
    world.emulator.setFaults({ latencyMs: { min: 300, median: 400, p99: 600 } });
    const output = await mkdtemp(path.join(tmpdir(), 'embedq-shards-'));
    const pool = startWorkers(world.services, { concurrency: 2 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '50', '--dimension', '64']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.shardsWritten >= shards);
      await run(id, output, () => world.emulator.setFaults({ latencyMs: { min: 5, median: 10, p99: 20 } }));
      const embedded = buildCorpus('data/', { textLines: 400 }).expected.filter((line) => line.kind === 'text').length;
      expect((await world.services.corpora.get(id))!.rowsEmbedded).toBe(embedded);
      const rows = await queryParquet(`SELECT count(*) AS n, count(DISTINCT row) AS distinct_rows, min(len(dense)) AS low FROM read_parquet('${output}/part-*.parquet')`);
      expect(rows).toEqual([{ n: BigInt(embedded), distinct_rows: BigInt(embedded), low: 64n }]);
    } finally {
      await pool.close();
      await removeFolder(output);
      world.emulator.setFaults({ latencyMs: { min: 20, median: 30, p99: 60 } });
    }
  };

  it('fails a job whose shard file was deleted while it ran as STORAGE_ERROR at once, and retry writes that shard again (finalize failed 14 times over 8 minutes, and retry the same)', async () => {
    await withJobMidway(1, async (id, output, fastAgain) => {
      // A written shard, not the temp file of one still being written (shards finish in any order):
      // deleting that one only made its write retry, and the job completed.
      const [written] = (await readdir(output)).filter((name) => /^part-\d+\.parquet$/.test(name));
      await rm(path.join(output, written!));
      const deletedAt = Date.now();
      fastAgain();
      const failed = await waitForJob(world.services, id);
      expect(Date.now() - deletedAt).toBeLessThan(15_000);
      expect(failed).toMatchObject({ state: 'failed', errorCode: 'STORAGE_ERROR' });
      expect(failed.error).toContain(`${written} is missing (`);
      expect(failed.error).toContain(`\`embedq retry ${id}\` writes that shard again`);

      expect((await runEmbedq(world.env, ['retry', id])).code).toBe(0);
      expect((await waitForJob(world.services, id)).state).toBe('completed');
    });
  });

  it('a retry writes again the written shards removed or replaced while the job stood cancelled, in one pass (it failed at finalize, and a second retry was needed)', async () => {
    await withJobMidway(2, async (id, output, fastAgain) => {
      expect((await runEmbedq(world.env, ['cancel', id])).code).toBe(0);
      expect((await waitForJob(world.services, id)).state).toBe('cancelled');
      // Every file the ledger holds is in place now (a cancel lets the writes in flight finish).
      const shards = (await readdir(output)).filter((name) => /^part-\d+\.parquet$/.test(name)).sort();
      expect(shards.length).toBeGreaterThanOrEqual(2);
      // An operator's cleanup between cancel and retry: one shard removed, another overwritten.
      await rm(path.join(output, shards[0]!));
      await writeFile(path.join(output, shards[1]!), 'not the shard');

      fastAgain();
      const retried = await runEmbedq(world.env, ['retry', id]);
      expect(retried.code, retried.stderr).toBe(0);
      expect(retried.stderr).toContain(`written shards gone from the output, to be written again: ${shards[0]}, ${shards[1]}`);
      const record = await waitForJob(world.services, id);
      expect(record.state, record.error ?? '').toBe('completed');
    });
  });

  /** Workers against a provider that answers every request with a 500 until `run` turns it back on. */
  /** The workers' log lines of the last outage (each failed attempt is a warning). */
  let outageLog: Array<Record<string, unknown>> = [];
  const duringOutage = async (run: () => Promise<void>): Promise<void> => {
    world.emulator.setFaults({ failRate500: 1 });
    outageLog = [];
    const services = createServices(world.settings, createLogger({ level: 'warn' }, { write: (line: string) => outageLog.push(JSON.parse(line) as Record<string, unknown>) }));
    const pool = startWorkers(services, { concurrency: 2 });
    try {
      await run();
    } finally {
      await pool.close();
      await services.close();
      world.emulator.setFaults({ failRate500: 0 });
    }
  };

  it('says why a running job makes no progress (a provider outage: retrying …), and finishes once it is back', async () => {
    await duringOutage(async () => {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/outage/', '--shard-rows', '50']);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.lastRetry !== null);
      const during = await runEmbedq(world.env, ['status', id]);
      expect(during.stdout).toMatch(/^state {5}running\nretrying {2}embed-batch attempt \d+ of 14: PROVIDER_UNAVAILABLE: .*500.* \(\d+ s ago\)$/m);
      expect((await world.services.corpora.get(id))!.rowsEmbedded).toBe(0);
      // Each failed attempt is one line with its code and reason, without a stack (~1.5 KB each,
      // on every attempt of every step, made an outage's logs megabytes).
      const attempts = outageLog.filter((line) => line.msg === 'job attempt failed; will retry');
      expect(attempts.length).toBeGreaterThan(0);
      for (const line of attempts) {
        expect(line).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', reason: expect.stringMatching(/500/), corpusJobId: id });
        expect(line).not.toHaveProperty('err');
      }
      world.emulator.setFaults({ failRate500: 0 });
      expect((await waitForJob(world.services, id)).state).toBe('completed');
      // A finished job has no "retrying" line; the note stays in the record (`status --json`).
      const after = await runEmbedq(world.env, ['status', id]);
      expect(after.stdout).toMatch(/^state {5}completed$/m);
      expect(after.stdout).not.toMatch(/^retrying/m);
    });
  });

  it('forgets the last failed attempt when the job is retried: the new generation starts clean', async () => {
    await duringOutage(async () => {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/outage-retry/', '--shard-rows', '50']);
      const id = submitted.stdout.trim();
      await waitForJob(world.services, id, (record) => record.lastRetry !== null);
      expect((await runEmbedq(world.env, ['cancel', id])).code).toBe(0);
      expect((await runEmbedq(world.env, ['status', id])).stdout).not.toMatch(/^retrying/m);
      world.emulator.setFaults({ failRate500: 0 });
      expect((await runEmbedq(world.env, ['retry', id])).code).toBe(0);
      const restarted = (await world.services.corpora.get(id))!;
      expect(restarted.generation).toBe(1);
      expect([restarted.lastRetry, restarted.lastRetryAt]).toEqual([null, null]);
      expect((await waitForJob(world.services, id)).state).toBe('completed');
    });
  });

  it('a worker that cannot reach DashScope steps aside after a few failures, so it does not spend the attempts of the jobs the healthy workers finish', async () => {
    world.emulator.setFaults({ latencyMs: { min: 200, median: 250, p99: 300 } });
    // A port nothing listens on: every request of the stray worker is refused at once.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const strayLog: Array<Record<string, unknown>> = [];
    const stray = createServices(
      loadSettings({ ...world.env, DASHSCOPE_BASE_URL: `http://127.0.0.1:${port}` }),
      createLogger({ level: 'warn' }, { write: (line: string) => strayLog.push(JSON.parse(line) as Record<string, unknown>) }),
    );
    const healthy = createServices(world.settings, createLogger({ level: 'silent' }));
    const pools = [startWorkers(stray, { concurrency: 4 }), startWorkers(healthy, { concurrency: 2 })];
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/stray-worker/']);
      const record = await waitForJob(world.services, submitted.stdout.trim(), undefined, 60_000);
      expect(record.state).toBe('completed');
      expect(record.rowsEmbedded + record.rowsBlank + record.rowsFailed).toBe(record.totalLines);
      // 40 batches at 250 ms, two at a time, take the healthy worker ~5 s. The stray one fails a
      // step every ~0.75 s (its quick retries), four at a time: ~25 failed attempts in that time
      // before it stepped aside. Now three, a 5 s rest, at most four more, a 10 s rest.
      const failedAttempts = strayLog.filter((line) => line.msg === 'job attempt failed; will retry');
      expect(failedAttempts.length).toBeGreaterThanOrEqual(3);
      expect(failedAttempts.length).toBeLessThanOrEqual(12);
      expect(strayLog).toContainEqual(
        expect.objectContaining({ code: 'PROVIDER_UNAVAILABLE', failuresInARow: 3, restMs: 5_000, msg: expect.stringMatching(/check this machine's DASHSCOPE_BASE_URL and network$/) }),
      );
    } finally {
      await Promise.all(pools.map((pool) => pool.close()));
      await Promise.all([stray.close(), healthy.close()]);
      world.emulator.setFaults({ latencyMs: { min: 20, median: 30, p99: 60 } });
    }
  });

  it('a provider outage: each rest doubles the one before however many steps failed at once, and the job goes on within seconds of its end', async () => {
    const log: Array<Record<string, unknown>> = [];
    const services = createServices(world.settings, createLogger({ level: 'warn' }, { write: (line: string) => log.push(JSON.parse(line) as Record<string, unknown>) }));
    const pool = startWorkers(services, { concurrency: 16 });
    try {
      world.emulator.setFaults({ failRate500: 1 });
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/short-outage/']);
      const id = submitted.stdout.trim();
      // Past the first rest (5 s): the steps taken after it fail too, and the worker rests again.
      await sleep(9_000);
      world.emulator.setFaults({ failRate500: 0 });
      const back = Date.now();
      // The second rest doubled once per failed step, 16 at once: a minute, where it is 10 s.
      expect((await waitForJob(world.services, id, undefined, 60_000)).state).toBe('completed');
      expect(Date.now() - back).toBeLessThan(25_000);
      const rests = log.filter((line) => typeof line.restMs === 'number');
      expect(rests.slice(0, 2).map((line) => line.restMs)).toEqual([5_000, 10_000]);
      // DashScope answered (500s): not this machine's network, as it once said.
      expect(rests[0]).toMatchObject({ status: 500, msg: expect.stringContaining('it was answered HTTP 500: if every worker says so, DashScope itself is failing') });
    } finally {
      await pool.close();
      await services.close();
      world.emulator.setFaults({ failRate500: 0 });
    }
  });

  it('records a line over 8,192 tokens as an error with --long-lines error, and embeds the rest', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/long/', '--out', 's3://out/long/', '--long-lines', 'error', '--output-type', 'dense']);
      const record = await waitForJob(world.services, submitted.stdout.trim());
      expect(record.state).toBe('completed');
      expect(record.rowsEmbedded).toBe(2);
      expect(record.rowsFailed).toBe(1);
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'long/');
    const errors = readFileSync(path.join(folder, '_errors.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ row: 1, source: 'long/only.txt', line: 1, code: 'TEXT_TOO_LONG' });
    expect(String(errors[0]!.message)).toMatch(/long\/only\.txt:2: text has (more than )?\d+ tokens/);
    await removeFolder(folder);
  });

  it('fails the job when a gzip member is found damaged after its lines were queued (976 corrupt rows were embedded and the job completed)', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/damaged-gzip/', '--out', 's3://out/damaged-gzip/', '--dimension', '64', '--output-type', 'dense']);
      const record = await waitForJob(world.services, submitted.stdout.trim(), undefined, 30_000);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('INVALID_GZIP');
      expect(record.error).toMatch(/damaged-gzip\/u\.txt\.gz: corrupt gzip data \(.+\) in the member holding line \d+, found after lines 1–\d+ were read: .*fix or replace the file, then submit again with --overwrite \(a retry would find the file replaced: INPUT_CHANGED\)/);
    } finally {
      await pool.close();
    }
    const { folder, keys } = await downloadPrefix(world.s3, 'out', 'damaged-gzip/');
    expect(keys).not.toContain('_SUCCESS');
    await removeFolder(folder);
  });

  it('fails a job none of whose lines can be read (no line has the text field, none is JSON), naming why (it completed with every line in _errors.jsonl, exit code 0)', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const small = await runEmbedq(world.env, ['submit', 's3://corpus/no-text-field/', '--out', 's3://out/no-text-field/', '--id-field', 'doc_id', '--dimension', '64', '--wait']);
      expect(small.code).toBe(1);
      const record = await waitForJob(world.services, small.stdout.trim().split('\n')[0]!);
      expect(record).toMatchObject({ state: 'failed', errorCode: 'MISSING_TEXT_FIELD', rowsEmbedded: 0 });
      expect(record.error).toContain(
        'no line has the text field "text": check --text-field, or --format for a text file (all 25 lines were refused; the first: no-text-field/small.jsonl:1: field "text" is missing (the line has fields "doc_id", "content"))',
      );
      // A big corpus fails once 1,000 lines lacked it, without reading the rest.
      const big = await runEmbedq(world.env, ['submit', 's3://corpus/no-text-field-big/', '--out', 's3://out/no-text-field-big/', '--dimension', '64']);
      const bigRecord = await waitForJob(world.services, big.stdout.trim());
      expect(bigRecord).toMatchObject({ state: 'failed', errorCode: 'MISSING_TEXT_FIELD' });
      expect(bigRecord.error).toContain('(the first 1000 lines were refused;');
      // A JSON document (an array, pretty-printed) under a .json name: no line is JSON on its own.
      const document = await runEmbedq(world.env, ['submit', 's3://corpus/json-document/', '--out', 's3://out/json-document/', '--dimension', '64']);
      const documentRecord = await waitForJob(world.services, document.stdout.trim());
      expect(documentRecord).toMatchObject({ state: 'failed', errorCode: 'INVALID_JSON', rowsEmbedded: 0 });
      expect(documentRecord.error).toMatch(/^split-corpus .*: no line is JSON: JSON Lines needs one JSON object per line .*\(all \d+ lines were refused; the first: json-document\/export\.json:1: invalid JSON/);
      // One line with the field is enough: the rest are records, as before.
      const late = await runEmbedq(world.env, ['submit', 's3://corpus/text-field-late/', '--out', 's3://out/text-field-late/', '--dimension', '64', '--id-field', 'doc_id']);
      expect(await waitForJob(world.services, late.stdout.trim())).toMatchObject({ state: 'completed', rowsEmbedded: 1, rowsFailed: 999 });
    } finally {
      await pool.close();
    }
    // Each record names its line's document (it named only the line).
    const { folder } = await downloadPrefix(world.s3, 'out', 'text-field-late/');
    const errors = readFileSync(path.join(folder, '_errors.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(errors).toHaveLength(999);
    expect(Object.keys(errors[0]!)).toEqual(['row', 'source', 'line', 'id', 'code', 'message']);
    expect(errors[0]).toMatchObject({ row: 0, line: 0, id: 'd0', code: 'MISSING_TEXT_FIELD' });
    expect(errors[998]).toMatchObject({ row: 998, id: 'd998' });
    await removeFolder(folder);
  });

  it('completes a shard whose every line the provider refused (its batch has no rows; the shard writer failed on it)', async () => {
    const pool = startWorkers(world.services, { concurrency: 4 });
    try {
      const id = await submitCorpusJob(
        { corpora: world.services.corpora, splitQueue: world.services.queues[QUEUES.split], s3: () => world.services.s3() },
        parseJobOptions({ input: 's3://corpus/refused/', output: 's3://out/refused/', shardRows: 10, dimension: 64, outputType: 'dense' }),
      );
      expect(await waitForJob(world.services, id, undefined, 30_000)).toMatchObject({ state: 'completed', rowsEmbedded: 10, rowsFailed: 1, totalShards: 2 });
    } finally {
      await pool.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'refused/');
    const errors = readFileSync(path.join(folder, '_errors.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(errors).toEqual([expect.objectContaining({ row: 10, code: 'CONTENT_REJECTED' })]);
    // The message names the file and line (from 1), as the reader's records do, then the provider's reason.
    const [record] = errors;
    expect(String(record!.message).startsWith(`${String(record!.source)}:11: `)).toBe(true);
    expect(record).toMatchObject({ line: 10, message: expect.stringContaining('DataInspectionFailed') });
    const [read] = await queryParquet(`SELECT count(*) AS n FROM read_parquet('${folder}/part-*.parquet')`);
    expect(read).toEqual({ n: 10n });
    await removeFolder(folder);
  });

  it('retries answers a broken proxy corrupted (a value beyond float32, a sparse index past int32, a bogus token count) and writes only what DashScope sent', async () => {
    // The first four answers are corrupted, one way each; JSON.parse would read 1e39 as a double
    // that Float32Array stores as Infinity, and 2**32 + 3 as an index an int32 column wraps to 3.
    const corruptions: Array<(body: string) => string> = [
      (body) => body.replace(/("embedding":\[)[^,]+/, '$11e39'),
      (body) => body.replace(/("value":)[^,]+/, '$11e39'),
      (body) => body.replace(/("index":)\d+/, `$1${2 ** 32 + 3}`),
      (body) => body.replace(/("total_tokens":)\d+/, '$11000000000000'),
    ];
    let billedTokens = 0;
    const proxy = await startRewritingProxy(
      world.emulator.url,
      rewriteText((body, index) => {
        const corrupt = corruptions[index];
        if (corrupt) return corrupt(body);
        billedTokens += Number(/"total_tokens":(\d+)/.exec(body)?.[1] ?? 0);
        return body;
      }),
    );
    const settings = loadSettings({ ...world.env, DASHSCOPE_BASE_URL: proxy.url });
    const services = createServices(settings, createLogger({ level: 'silent' }));
    const pool = startWorkers(services, { concurrency: 4 });
    const options = parseJobOptions({ input: 's3://corpus/broken-answers/', output: 's3://out/broken-answers/', shardRows: 10 });
    try {
      const id = await submitCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: () => services.s3() }, options);
      expect(await waitForJob(services, id, undefined, 60_000)).toMatchObject({ state: 'completed', rowsEmbedded: 50, rowsFailed: 0 });
    } finally {
      await pool.close();
      await services.close();
      await proxy.close();
    }
    const { folder } = await downloadPrefix(world.s3, 'out', 'broken-answers/');
    expect(readFileSync(path.join(folder, '_errors.jsonl'), 'utf8')).toBe('');
    const rows = await queryParquet(`SELECT text, dense, sparse FROM read_parquet('${folder}/part-*.parquet')`);
    expect(rows).toHaveLength(50);
    const parameters = embeddingParameters(options);
    for (const row of rows) {
      const vectors = emulatorEmbedding(String(row.text), parameters);
      expect(row.dense).toEqual(Array.from(vectors.dense!));
      expect(row.sparse).toEqual(vectors.sparse);
    }
    // Only the answers taken are counted: a corrupted one was billed by the emulator, but its count is not to be trusted.
    const manifest = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as Manifest;
    expect(manifest.tokens).toBe(billedTokens);
    await removeFolder(folder);
  });

  it('rejects bad options with every problem listed, before queueing anything', async () => {
    const result = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/x/', '--model', 'text-embedding-v3', '--dimension', '2048', '--instruct', 'find docs']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/dimension: 2048 is not allowed for text-embedding-v3/);
    expect(result.stderr).toMatch(/instruct: text-embedding-v3 does not take an instruction/);
    // Refused by the argument parser (a value outside a flag's choices, a missing flag): also exit 2.
    const unknownModel = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/x/', '--model', 'text-embedding-v9']);
    expect(unknownModel.code).toBe(2);
    expect(unknownModel.stderr).toMatch(/option '--model <model>' argument 'text-embedding-v9' is invalid/);
    const noOutput = await runEmbedq(world.env, ['submit', 's3://corpus/data/']);
    expect(noOutput.code).toBe(2);
    expect(noOutput.stderr).toMatch(/--out/);
    const missing = await runEmbedq(world.env, ['submit', 's3://corpus/nothing-here/', '--out', 's3://out/x/']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nothing-here/);
  });
});

/** The top-level keys a JSON object line holds more than once (JSON.parse keeps the last, silently). */
function repeatedKeys(line: string): string[] {
  const seen = new Set<string>();
  const repeated: string[] = [];
  let depth = 0;
  for (let index = 0; index < line.length; index += 1) {
    const char = line[index]!;
    if (char === '{' || char === '[') depth += 1;
    else if (char === '}' || char === ']') depth -= 1;
    else if (char === '"') {
      let end = index + 1;
      while (line[end] !== '"') end += line[end] === '\\' ? 2 : 1;
      const key = line.slice(index + 1, end);
      if (depth === 1 && line[end + 1] === ':') {
        if (seen.has(key)) repeated.push(key);
        seen.add(key);
      }
      index = end;
    }
  }
  return repeated;
}
