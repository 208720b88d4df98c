import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { METRICS } from '../../src/metrics/metric-names.js';
import { readWorkerMetrics } from '../../src/metrics/read-metrics.js';
import { embeddingParameters } from '../support/embedding-parameters.js';
import { startWorld, type World } from '../support/world.js';

/**
 * `embedq_requests_total`'s outcome for a request its caller cut (a cancel, a stopping worker):
 * the real client, its instrumentation and the recorder's flush to Redis, against an emulator that
 * answers after 2 s.
 */
describe('request metrics', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld({ faults: { latencyMs: { min: 2_000, median: 2_000, p99: 2_000 } } });
  });
  afterAll(() => world.close());

  it('counts a request cut by its caller as aborted, not as other', async () => {
    const requests = async (): Promise<Record<string, number>> => {
      await world.services.metrics.flush();
      const samples = (await readWorkerMetrics(world.services.redis, world.settings.redisPrefix)).filter((sample) => sample.name === METRICS.requests.name);
      return Object.fromEntries(samples.map((sample) => [`${sample.labels.outcome}/${sample.labels.status}`, sample.value]));
    };
    const before = await requests();
    const cut = new AbortController();
    setTimeout(() => cut.abort(new Error('the job was cancelled')), 200);
    await expect(world.services.embeddings.embed(['a line'], embeddingParameters(), { signal: cut.signal })).rejects.toThrow();
    const after = await requests();
    expect((after['aborted/none'] ?? 0) - (before['aborted/none'] ?? 0)).toBe(1);
    expect(after['other/none'] ?? 0).toBe(before['other/none'] ?? 0);
  });
});
