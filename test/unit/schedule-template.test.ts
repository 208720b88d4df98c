import { describe, expect, it } from 'vitest';

import { scheduleRepeatStrategy } from '../../jobs/schedule-next-tick.js';
import { hasPlaceholder, renderTemplate, scheduleRoot, validateCron, validateRoot, validateTemplate } from '../../jobs/schedule-template.js';

describe('schedule templates', () => {
  // 2026-03-01T23:30:05Z: already March 2 in Shanghai (UTC+8), still March 1 in New York (UTC-5).
  const tickMillis = Date.UTC(2026, 2, 1, 23, 30, 5);

  it('renders {date} and {time} in the schedule zone and {runId} as given', () => {
    const template = 's3://b/nightly/{date}/{time}-{runId}/';
    expect(renderTemplate(template, { tickMillis, tz: 'UTC', runId: 'cj-x-1' })).toBe('s3://b/nightly/2026-03-01/233005-cj-x-1/');
    expect(renderTemplate(template, { tickMillis, tz: 'Asia/Shanghai', runId: 'cj-x-1' })).toBe('s3://b/nightly/2026-03-02/073005-cj-x-1/');
    expect(renderTemplate(template, { tickMillis, tz: 'America/New_York', runId: 'cj-x-1' })).toBe('s3://b/nightly/2026-03-01/183005-cj-x-1/');
    // Midnight is 00, not 24 (hourCycle h23).
    expect(renderTemplate('{time}', { tickMillis: Date.UTC(2026, 0, 1, 0, 0, 0), tz: 'UTC', runId: '' })).toBe('000000');
  });

  it('roots a schedule at the folder before its first placeholder, or at the output itself', () => {
    expect(scheduleRoot('s3://b/nightly/{date}/')).toBe('s3://b/nightly/');
    expect(scheduleRoot('s3://b/nightly/run-{date}-{time}/')).toBe('s3://b/nightly/');
    expect(scheduleRoot('/data/out/fixed/')).toBe('/data/out/fixed/');
    expect(hasPlaceholder('/data/out/fixed/')).toBe(false);
    expect(hasPlaceholder('/data/{date}')).toBe(true);
  });

  it('refuses unknown or unclosed placeholders', () => {
    expect(() => validateTemplate('s3://b/{date}/{runId}/{time}')).not.toThrow();
    expect(() => validateTemplate('s3://b/{Date}/')).toThrow(/unknown placeholder "\{Date\}"/);
    expect(() => validateTemplate('s3://b/{date/')).toThrow(/unknown placeholder "\{date\/"/);
  });

  it('refuses a template whose root is no location: a placeholder in the bucket name', () => {
    expect(() => validateRoot('s3://vec/{date}/x/')).not.toThrow();
    expect(() => validateRoot('s3://vec/x-{date}/')).not.toThrow();
    expect(() => validateRoot('/data/out/{date}/')).not.toThrow();
    expect(() => validateRoot('s3://vec-{date}/x/')).toThrow(/a placeholder may not appear in the bucket name/);
    expect(() => validateRoot('s3://{runId}/')).toThrow(/a placeholder may not appear in the bucket name/);
    // A relative template in a schedules file (used as written) rooted at nothing.
    expect(() => validateRoot('{date}/out/')).toThrow(/its root "", where _latest.json is kept, is not a location/);
  });

  it('accepts 5- and 6-field patterns and refuses the rest with the reason', () => {
    expect(validateCron('0 3 * * *', 'Europe/Berlin').getTime()).toBeGreaterThan(Date.now());
    expect(validateCron('*/2 * * * * *', 'UTC').getTime() - Date.now()).toBeLessThanOrEqual(2_000);
    expect(() => validateCron('0 0 3 * * * *', 'UTC')).toThrow(/expected 5 fields.*got 7/);
    expect(() => validateCron('0 25 * * *', 'UTC')).toThrow(/--cron "0 25 \* \* \*": .*0-23/);
    expect(() => validateCron('0 3 * * *', 'Europe/Atlantis')).toThrow(/--tz "Europe\/Atlantis"/);
  });

  it('refuses a hashed value (H) in any field: BullMQ gives cron-parser no seed, so it is drawn anew at every tick', () => {
    for (const pattern of ['H * * * *', 'H * * * * *', '0 H * * *', 'H/15 * * * *', '0 0 H(1-28) * *', '0 3 * * 1,H', '5,H 3 * * *', '*/H * * * *', '2/H * * * *', '0 3 * * 1#H', 'h * * * *']) {
      expect(() => validateCron(pattern, 'UTC'), pattern).toThrow(/"H" \(a hashed value\) is not supported/);
    }
    expect(validateCron('0 3 * * THU', 'UTC').getUTCDay()).toBe(4);
    expect(() => validateCron('0 3 * * MON-THU', 'UTC')).not.toThrow();
    expect(() => validateCron('0 3 * * thu', 'UTC')).not.toThrow();
  });
});

/**
 * The ticks a schedule gets, as BullMQ's Job Scheduler plans them: each from the one before, with
 * the strategy it runs (schedule-next-tick.ts), so what fires is what is tested.
 */
function ticks(pattern: string, tz: string, from: string, count: number): string[] {
  const planned: string[] = [];
  let millis = Date.parse(from);
  for (let index = 0; index < count; index++) {
    millis = scheduleRepeatStrategy(millis, { pattern, tz }) as number;
    planned.push(new Date(millis).toISOString());
  }
  return planned;
}

describe('ticks across daylight saving changes', () => {
  // Santiago's clocks skip from 00:00 (UTC-4) to 01:00 (UTC-3) on 2027-09-05; Havana's from 00:00
  // (UTC-5) to 01:00 (UTC-4) on 2027-03-14. A tick in the skipped hour runs as the clocks skip it,
  // at 01:00 (01:30 for 00:30); before cron-parser 5.10.5 it was lost, and the day, week or year
  // with it (BullMQ pins 5.10.3; package.json overrides it).
  it('a tick in a gap at midnight runs after the gap, for every pattern; the next day is as usual', () => {
    // Soft: each pattern that loses its tick is reported.
    expect.soft(ticks('0 0 * * *', 'America/Santiago', '2027-09-04T12:00:00Z', 2)).toEqual(['2027-09-05T04:00:00.000Z', '2027-09-06T03:00:00.000Z']);
    expect.soft(ticks('30 0 * * *', 'America/Santiago', '2027-09-04T12:00:00Z', 2)).toEqual(['2027-09-05T04:30:00.000Z', '2027-09-06T03:30:00.000Z']);
    expect.soft(ticks('0 */6 * * *', 'America/Santiago', '2027-09-04T12:00:00Z', 4)).toEqual([
      '2027-09-04T16:00:00.000Z',
      '2027-09-04T22:00:00.000Z',
      '2027-09-05T04:00:00.000Z',
      '2027-09-05T09:00:00.000Z',
    ]);
    expect.soft(ticks('0 0 * * 0', 'America/Santiago', '2027-09-04T12:00:00Z', 2)).toEqual(['2027-09-05T04:00:00.000Z', '2027-09-12T03:00:00.000Z']);
    expect.soft(ticks('0 0 5 9 *', 'America/Santiago', '2027-01-01T00:00:00Z', 2)).toEqual(['2027-09-05T04:00:00.000Z', '2028-09-05T03:00:00.000Z']);
    expect.soft(ticks('0 0 * * *', 'America/Havana', '2027-03-13T12:00:00Z', 2)).toEqual(['2027-03-14T05:00:00.000Z', '2027-03-15T04:00:00.000Z']);
    // Rendered on the day it stands for, at the local time it ran.
    expect(renderTemplate('{date}/{time}', { tickMillis: Date.parse('2027-09-05T04:00:00Z'), tz: 'America/Santiago', runId: '' })).toBe('2027-09-05/010000');
  });

  it('a gap at another hour, the repeated hour, zones without the change and UTC are as before', () => {
    // Berlin skips 02:00-03:00 on 2027-03-28: 02:30 runs at 03:30 CEST.
    expect(ticks('30 2 * * *', 'Europe/Berlin', '2027-03-27T12:00:00Z', 2)).toEqual(['2027-03-28T01:30:00.000Z', '2027-03-29T00:30:00.000Z']);
    // Berlin repeats 02:00-03:00 on 2027-10-31: a daily 02:30 runs once, an hourly one at both 02:30s.
    expect(ticks('30 2 * * *', 'Europe/Berlin', '2027-10-30T12:00:00Z', 2)).toEqual(['2027-10-31T00:30:00.000Z', '2027-11-01T01:30:00.000Z']);
    expect(ticks('30 * * * *', 'Europe/Berlin', '2027-10-30T23:00:00Z', 3)).toEqual(['2027-10-30T23:30:00.000Z', '2027-10-31T00:30:00.000Z', '2027-10-31T01:30:00.000Z']);
    // New York's gap is at 02:00; its midnight is untouched.
    expect(ticks('0 2 * * *', 'America/New_York', '2027-03-13T12:00:00Z', 2)).toEqual(['2027-03-14T07:00:00.000Z', '2027-03-15T06:00:00.000Z']);
    expect(ticks('0 0 * * *', 'America/New_York', '2027-03-13T12:00:00Z', 2)).toEqual(['2027-03-14T05:00:00.000Z', '2027-03-15T04:00:00.000Z']);
    // Santiago's midnight on the day the clocks go back (00:00 -03 → 23:00 -04 the day before), and in winter.
    expect(ticks('0 0 * * *', 'America/Santiago', '2027-04-02T12:00:00Z', 2)).toEqual(['2027-04-03T03:00:00.000Z', '2027-04-04T04:00:00.000Z']);
    expect(ticks('0 0 * * *', 'America/Santiago', '2027-06-01T12:00:00Z', 2)).toEqual(['2027-06-02T04:00:00.000Z', '2027-06-03T04:00:00.000Z']);
    expect(ticks('0 0 * * *', 'UTC', '2027-09-04T12:00:00Z', 2)).toEqual(['2027-09-05T00:00:00.000Z', '2027-09-06T00:00:00.000Z']);
  });
});
