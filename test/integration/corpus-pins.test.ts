import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { CorpusKeys } from '../../jobs/corpus-keys.js';
import { CorpusPins } from '../../jobs/corpus-pins.js';
import { InputChangedError } from '../../src/errors.js';

/** The pins a split checks each corpus object against when it reads the corpus again (real Redis). */
describe('corpus pins', () => {
  let redis: Redis;
  let pins: CorpusPins;
  const keys = new CorpusKeys(`pins${randomBytes(4).toString('hex')}`);
  const object = (key: string): { key: string; source: string } => ({ key, source: `s3://corpus/${key}` });

  beforeAll(() => {
    redis = new Redis(inject('redisUrl'));
    pins = new CorpusPins(redis, keys);
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('pins each object as it is first read; the same keys and versions pass again, any other fails naming the object', async () => {
    await pins.check('job-a', 0, object('a.txt'), 'v1');
    await pins.check('job-a', 1, object('b.txt'), 'v1');
    // Read again, as a split that started over does.
    await pins.check('job-a', 0, object('a.txt'), 'v1');
    await pins.check('job-a', 1, object('b.txt'), 'v1');
    // A third object, new on this pass: pinned.
    await pins.check('job-a', 2, object('c.txt'), 'v1');
    await expect(pins.check('job-a', 1, object('b.txt'), 'v2')).rejects.toThrow(InputChangedError);
    // Another object where b.txt was (a.txt removed, or an object added before b.txt).
    await expect(pins.check('job-a', 0, object('b.txt'), 'v1')).rejects.toThrow(/s3:\/\/corpus\/b\.txt is not the object job job-a read there before/);
    // Other jobs have pins of their own.
    await pins.check('job-b', 0, object('b.txt'), 'v2');
  });

  it('at the end of the corpus, fails when objects read before are gone; drop forgets the pins', async () => {
    for (const [index, key] of ['a.txt', 'b.txt', 'c.txt'].entries()) await pins.check('job-c', index, object(key), 'v1');
    await pins.checkCount('job-c', 's3://corpus/', 3);
    const gone = await pins.checkCount('job-c', 's3://corpus/', 2).catch((error: unknown) => error);
    expect(gone).toBeInstanceOf(InputChangedError);
    expect((gone as InputChangedError).message).toMatch(/^s3:\/\/corpus\/: 1 of the 3 objects job job-c read before are gone/);
    await pins.drop('job-c');
    expect(await redis.exists(keys.pins('job-c'))).toBe(0);
    await pins.check('job-c', 0, object('other.txt'), 'v9');
  });
});
