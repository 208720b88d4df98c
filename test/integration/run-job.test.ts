import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';

import { Job, Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { FinalizeJobPayload } from '../../jobs/payloads.js';
import { queueOptions } from '../../jobs/queues.js';
import { loadSettings } from '../../src/config.js';
import { ProviderAccountError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { processor } from '../../workers/run-job.js';
import { StaleStepError } from '../../workers/step-fence.js';
import { createServices, type Services } from '../../workers/services.js';

/**
 * The processor builds a job's child logger only when the handler logs (an embed job at the info
 * level never does, and building it cost about a tenth of BullMQ's own work per job). What is
 * logged must not change: every line carries the job's bindings, failures included.
 */

const lines: Array<Record<string, unknown>> = [];
let services: Services;
let queue: Queue;

beforeAll(() => {
  const settings = loadSettings({ REDIS_URL: inject('redisUrl'), EMBEDQ_REDIS_PREFIX: `t${randomBytes(4).toString('hex')}`, LOG_LEVEL: 'debug', DASHSCOPE_BASE_URL: 'http://127.0.0.1:9' });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  services = createServices(settings, createLogger({ level: 'debug' }, sink));
  queue = new Queue('write', queueOptions(settings.redisPrefix, services.redis));
});
afterAll(async () => {
  await queue.close();
  await services.close();
});

async function realJob(corpusJobId: string): Promise<Job> {
  const added = await queue.add('finalize-job', { v: 1, corpusJobId, generation: 1 }, { jobId: `${corpusJobId}-finalize`, attempts: 3 });
  return (await Job.fromId(queue, added.id!))!;
}

describe('processor logging', () => {
  it('gives every line a handler logs the job bindings, and logs nothing for a handler that does not log', async () => {
    const job = await realJob('cj-logs');
    const before = lines.length;
    await processor(services, FinalizeJobPayload, async (_payload, context) => {
      context.logger.info({ step: 1 }, 'first');
      context.logger.debug('second');
    })(job);
    const logged = lines.slice(before);
    expect(logged.map((line) => line.msg)).toEqual(['first', 'second']);
    for (const line of logged) {
      expect(line).toMatchObject({ queue: 'write', job: 'finalize-job', jobId: 'cj-logs-finalize', corpusJobId: 'cj-logs', attempt: 1 });
    }
    const quietBefore = lines.length;
    await processor(services, FinalizeJobPayload, async () => undefined)(await realJob('cj-quiet'));
    expect(lines.length).toBe(quietBefore);
  });

  it('logs a permanent failure with the job bindings, though the handler never logged', async () => {
    const job = await realJob('cj-fails');
    const before = lines.length;
    await expect(
      processor(services, FinalizeJobPayload, async () => {
        throw new ProviderAccountError('DashScope refused the key', {});
      })(job),
    ).rejects.toThrow(/PROVIDER_ACCOUNT|refused the key/);
    const failed = lines.slice(before).find((line) => line.msg === 'corpus job failed');
    expect(failed).toMatchObject({ jobId: 'cj-fails-finalize', corpusJobId: 'cj-fails', attempt: 1, level: 50, code: 'PROVIDER_ACCOUNT', reason: 'DashScope refused the key' });
    // Classified: its code and message say it all; a stack (~2 KB with the SDK's frames) only for the rest.
    expect(failed).not.toHaveProperty('err');
  });

  it('leaves an attempt Redis failed (unreachable, or refusing the credentials) to the outage log: no warning with a stack', async () => {
    const refused = Object.assign(new Error('WRONGPASS invalid username-password pair or user is disabled.'), { name: 'ReplyError' });
    const unreachable = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    for (const [id, error] of [['cj-refused', refused], ['cj-unreachable', unreachable]] as const) {
      const job = await realJob(id);
      const before = lines.length;
      await expect(processor(services, FinalizeJobPayload, async () => Promise.reject(error))(job)).rejects.toBe(error);
      const attempt = lines.slice(before).filter((line) => String(line.msg).startsWith('job attempt failed'));
      // Before: a warning with the error's stack, one for every step in flight when a password was rotated.
      expect(attempt).toHaveLength(1);
      expect(attempt[0]).toMatchObject({ jobId: `${id}-finalize`, level: 20 });
    }
  });
});

describe('a step out of date (its job ended while it was paused)', () => {
  it('ends quietly with a warning: no failure, no retry, the corpus job left as it is', async () => {
    const job = await realJob('cj-stale');
    const before = lines.length;
    await expect(
      processor(services, FinalizeJobPayload, async () => {
        throw new StaleStepError('job cj-stale is completed in generation 1, not running in generation 1');
      })(job),
    ).resolves.toBeUndefined();
    expect(lines.slice(before)).toEqual([
      expect.objectContaining({ level: 40, msg: 'step out of date: stopped before writing', reason: 'job cj-stale is completed in generation 1, not running in generation 1', corpusJobId: 'cj-stale' }),
    ]);
  });
});
