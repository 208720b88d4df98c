import { QueueKeys } from 'bullmq/dist/esm/classes/queue-keys.js';
import { describe, expect, it } from 'vitest';

import { QUEUES } from '../../jobs/queues.js';
import { BULLMQ_QUEUE_KEYS, scheduleNameProblem } from '../../jobs/schedule-name.js';

describe('schedule names', () => {
  it("knows every key BullMQ keeps under the schedule queue's name (an upgrade adding one fails here)", () => {
    const keys = new QueueKeys('embedq').getKeys(QUEUES.schedule) as Record<string, string>;
    const suffixes = Object.keys(keys).filter((suffix) => suffix !== '');
    expect(suffixes.length).toBeGreaterThan(10);
    for (const suffix of suffixes) expect(BULLMQ_QUEUE_KEYS).toContain(suffix);
  });

  it("refuses a name whose record would be BullMQ's key or a job's, with the reason", () => {
    for (const name of ['nightly', 'wait-for-it', 'Wait', 'v2.daily', '2026-reindex', 'queued-reindex']) expect(scheduleNameProblem(name), name).toBeUndefined();
    for (const name of ['wait', 'delayed', 'events', 'repeat', 'meta', 'id', 'de', 'pc', 'marker', 'stalled-check', 'waiting-children', 'priority']) {
      expect(scheduleNameProblem(name), name).toContain(`BullMQ keeps the schedule queue's "${name}"`);
    }
    expect(scheduleNameProblem('42')).toContain("digits only is the form of BullMQ's job ids");
    expect(scheduleNameProblem('queued-nightly-1764561600000-1764561601234')).toContain("waiting ticks' job ids");
    expect(scheduleNameProblem('a:b')).toContain('no ":"');
    expect(scheduleNameProblem('x'.repeat(65))).toContain('at most 64');
  });
});
