import { describe, expect, it } from 'vitest';

import { assertNoOverlap, scheduleOverlap } from '../../jobs/schedule-overlap.js';

describe('schedule overlap', () => {
  const overlap = (out: string, otherOut: string) => scheduleOverlap({ name: 'a', out }, { name: 'b', out: otherOut });

  it.each([
    ['s3://b/nightly-{date}/', 's3://b/weekly-{date}/', /same root s3:\/\/b\/ .* as schedule b/],
    ['s3://b/{date}/en/', 's3://b/{date}/de/', /same root s3:\/\/b\//],
    ['/data/x/root2/en-{runId}', '/data/x/root2/de-{runId}', /same root \/data\/x\/root2\//],
    ['s3://b/out/', 's3://b/out', /also the output of schedule b/],
    ['s3://b/out/', 's3://b/out/{date}/', /same root s3:\/\/b\/out\//],
    // b's runs can render a's root, or folders above and under it.
    ['s3://b/2026-11-29/{time}/', 's3://b/{date}/', /runs of schedule b .* can land at or under the root s3:\/\/b\/2026-11-29\/ of schedule a/],
    ['s3://b/2026-11-29/{time}/', 's3://b/{date}/{time}/', /can land at or under/],
    ['s3://b/run-cj-mx3-abc/{date}/', 's3://b/run-{runId}/', /can land at or under/],
  ])('refuses %s beside %s', (out, otherOut, reason) => {
    expect(overlap(out, otherOut)).toMatch(reason);
    expect(scheduleOverlap({ name: 'b', out: otherOut }, { name: 'a', out })).toBeDefined();
  });

  it.each([
    ['s3://b/nightly/{date}/', 's3://b/weekly/{date}/'],
    ['s3://b/{date}/', 's3://b/en/{date}/'],
    ['s3://b/{time}/', 's3://b/2026-11-29/{time}/'],
    ['s3://b/out/', 's3://b/out/en/{date}/'],
    ['s3://b/{date}/', 's3://b/2026-11-29/en/{time}/'],
    ['s3://b/{date}/', 's3://c/{date}/'],
    ['s3://b/{date}/', '/b/{date}/'],
  ])('allows %s beside %s: their runs and pointers never meet', (out, otherOut) => {
    expect(overlap(out, otherOut)).toBeUndefined();
    expect(scheduleOverlap({ name: 'b', out: otherOut }, { name: 'a', out })).toBeUndefined();
  });

  it('a schedule is no overlap with the one of its name it replaces', () => {
    expect(() => assertNoOverlap({ name: 'a', out: 's3://b/x-{date}/' }, [{ name: 'a', out: 's3://b/y-{date}/' }])).not.toThrow();
    expect(() => assertNoOverlap({ name: 'a', out: 's3://b/x-{date}/' }, [{ name: 'c', out: 's3://b/y-{date}/' }])).toThrow(/schedule c/);
  });
});
