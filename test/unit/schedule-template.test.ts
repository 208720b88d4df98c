import { describe, expect, it } from 'vitest';

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
});
