import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import { parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { createServices } from '../../workers/services.js';
import { startWorkers } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { downloadPrefix, removeFolder, runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';
import { loadSettings } from '../../src/config.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';

describe('failures that stop a job, and bad input', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld({ apiKey: 'sk-the-right-key', faults: { latencyMs: { min: 20, median: 30, p99: 60 } } }, { DASHSCOPE_API_KEY: 'sk-the-right-key' });
    const corpus = buildCorpus('data/', { textLines: 400 });
    for (const object of corpus.objects) await world.put(object.key, object.body);
    await world.put('long/only.txt', `short line\n${'9 '.repeat(9000)}\nanother short line\n`);
  });
  afterAll(() => world.close());

  it('stops the whole job quickly on a bad API key instead of trying every batch', async () => {
    const settings = loadSettings({ ...world.env, DASHSCOPE_API_KEY: 'sk-wrong-key' });
    const services = createServices(settings, createLogger({ level: 'silent' }));
    const pool = startWorkers(services, { concurrency: 4 });
    try {
      const id = await submitCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split] }, parseJobOptions({ input: 's3://corpus/data/', output: 's3://out/badkey/' }));
      const record = await waitForJob(services, id);
      expect(record.state).toBe('failed');
      expect(record.errorCode).toBe('PROVIDER_ACCOUNT');
      expect(record.error).toMatch(/InvalidApiKey/);
      expect(record.error).not.toMatch(/sk-wrong-key/);
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
    expect(String(errors[0]!.message)).toMatch(/long\/only\.txt:2: text has \d+ tokens/);
    await removeFolder(folder);
  });

  it('rejects bad options with every problem listed, before queueing anything', async () => {
    const result = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/x/', '--model', 'text-embedding-v3', '--dimension', '2048', '--instruct', 'find docs']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/dimension: 2048 is not allowed for text-embedding-v3/);
    expect(result.stderr).toMatch(/instruct: text-embedding-v3 does not take an instruction/);
    const missing = await runEmbedq(world.env, ['submit', 's3://corpus/nothing-here/', '--out', 's3://out/x/']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nothing-here/);
  });
});
