import { describe, expect, it } from 'vitest';

import { nextScheduleTick, scheduleRepeatStrategy } from '../../jobs/schedule-next-tick.js';
import { validateCron } from '../../jobs/schedule-template.js';

/** The ticks the Job Scheduler plans, each from the one before (or from `from`). */
function ticks(pattern: string, tz: string, from: string, count: number): string[] {
  const planned: string[] = [];
  let millis = Date.parse(from);
  for (let index = 0; index < count; index++) {
    millis = nextScheduleTick(pattern, tz, millis);
    planned.push(new Date(millis).toISOString());
  }
  return planned;
}

/**
 * Lord Howe's clocks go back half an hour at 02:00 (+11 → +10:30) on 2027-04-04 (15:00Z on
 * 04-03) and forward at 02:00 (+10:30 → +11) on 2027-10-03 (15:30Z on 10-02). Chatham's go back
 * an hour at 03:45 (+13:45 → +12:45) on 2027-04-04 (14:00Z on 04-03) and forward at 02:45
 * (+12:45 → +13:45) on 2027-09-26 (13:00Z on 09-25). cron-parser 5.10.6 alone got each wrong.
 */
describe('next tick across the half-hour and 02:45 changes (Lord Howe, Chatham)', () => {
  it('a daily tick after the change back comes the next day; before, cron-parser threw and the schedule never ticked again', () => {
    expect(ticks('0 1 * * *', 'Australia/Lord_Howe', '2027-04-03T14:00:00.050Z', 2)).toEqual(['2027-04-04T14:30:00.000Z', '2027-04-05T14:30:00.000Z']);
    expect(ticks('25 0 * * *', 'Australia/Lord_Howe', '2027-04-03T13:25:00.050Z', 1)).toEqual(['2027-04-04T13:55:00.000Z']);
    // `schedule add` in that window: before, refused (exit 2) with "loop limit exceeded".
    expect(validateCron('0 1 * * *', 'Australia/Lord_Howe', Date.parse('2027-04-03T14:00:00.050Z')).toISOString()).toBe('2027-04-04T14:30:00.000Z');
  });

  it('an hourly or quarter-hourly tick never comes at or before the one just run; before, the same tick came again for 30 (15) minutes', () => {
    // 02:00 +11 is the change itself: the next full hour on the clock is 02:00 +10:30.
    expect(ticks('0 * * * *', 'Australia/Lord_Howe', '2027-04-03T14:00:00.020Z', 3)).toEqual([
      '2027-04-03T15:30:00.000Z',
      '2027-04-03T16:30:00.000Z',
      '2027-04-03T17:30:00.000Z',
    ]);
    // Every quarter hour on the clock, through both passes of the repeated hour (02:45-03:45).
    expect(ticks('*/15 * * * *', 'Pacific/Chatham', '2027-04-03T12:50:00Z', 10)).toEqual(
      ['13:00', '13:15', '13:30', '13:45', '14:00', '14:15', '14:30', '14:45', '15:00', '15:15'].map((time) => `2027-04-03T${time}:00.000Z`),
    );
    // The strategy as BullMQ calls it, from "now" a moment after the tick.
    expect(new Date(scheduleRepeatStrategy(Date.parse('2027-04-03T13:00:00.020Z'), { pattern: '*/15 * * * *', tz: 'Pacific/Chatham' }) as number).toISOString()).toBe(
      '2027-04-03T13:15:00.000Z',
    );
  });

  it('a daily tick in the repeated interval runs once, in the first pass', () => {
    // Lord Howe repeats 01:30-02:00 on 2027-04-04; Chatham 02:45-03:45.
    expect(ticks('45 1 * * *', 'Australia/Lord_Howe', '2027-04-03T12:00:00Z', 2)).toEqual(['2027-04-03T14:45:00.000Z', '2027-04-04T15:15:00.000Z']);
    expect(ticks('0 3 * * *', 'Pacific/Chatham', '2027-04-03T12:00:00Z', 2)).toEqual(['2027-04-03T13:15:00.000Z', '2027-04-04T14:15:00.000Z']);
  });

  it('a daily tick the change forward skips runs later by the jump, on its day; before, that day had no run', () => {
    // 02:00 on 10-03 does not exist: the run is at 02:30 +11 (15:30Z on 10-02), the next at 02:00 +11.
    expect(ticks('0 2 * * *', 'Australia/Lord_Howe', '2027-10-01T15:30:00Z', 2)).toEqual(['2027-10-02T15:30:00.000Z', '2027-10-03T15:00:00.000Z']);
    // 02:45 on 09-26 does not exist: the run is at 03:45 +13:45.
    expect(ticks('45 2 * * *', 'Pacific/Chatham', '2027-09-24T14:00:00Z', 2)).toEqual(['2027-09-25T14:00:00.000Z', '2027-09-26T13:00:00.000Z']);
  });
});

describe('next tick where cron-parser was right (nothing changed)', () => {
  it('Berlin and New York: a skipped tick an hour later, a repeated daily tick once, an hourly one twice', () => {
    expect(ticks('30 2 * * *', 'Europe/Berlin', '2027-03-27T12:00:00Z', 2)).toEqual(['2027-03-28T01:30:00.000Z', '2027-03-29T00:30:00.000Z']);
    expect(ticks('0 * * * *', 'Europe/Berlin', '2027-03-27T23:30:00Z', 3)).toEqual(['2027-03-28T00:00:00.000Z', '2027-03-28T01:00:00.000Z', '2027-03-28T02:00:00.000Z']);
    expect(ticks('30 2 * * *', 'Europe/Berlin', '2027-10-30T12:00:00Z', 2)).toEqual(['2027-10-31T00:30:00.000Z', '2027-11-01T01:30:00.000Z']);
    expect(ticks('*/30 * * * *', 'Europe/Berlin', '2027-10-30T23:30:00Z', 4)).toEqual([
      '2027-10-31T00:00:00.000Z',
      '2027-10-31T00:30:00.000Z',
      '2027-10-31T01:00:00.000Z',
      '2027-10-31T01:30:00.000Z',
    ]);
    expect(ticks('30 2 * * *', 'America/New_York', '2027-03-13T12:00:00Z', 2)).toEqual(['2027-03-14T07:30:00.000Z', '2027-03-15T06:30:00.000Z']);
    expect(ticks('30 1 * * *', 'America/New_York', '2027-11-06T12:00:00Z', 2)).toEqual(['2027-11-07T05:30:00.000Z', '2027-11-08T06:30:00.000Z']);
    expect(ticks('0 * * * *', 'America/New_York', '2027-11-07T04:30:00Z', 3)).toEqual(['2027-11-07T05:00:00.000Z', '2027-11-07T06:00:00.000Z', '2027-11-07T07:00:00.000Z']);
  });

  it('seconds, years, and a startDate later than now, as BullMQ passes them', () => {
    expect(ticks('*/2 * * * * *', 'UTC', '2027-09-04T12:00:00.300Z', 2)).toEqual(['2027-09-04T12:00:02.000Z', '2027-09-04T12:00:04.000Z']);
    expect(ticks('0 0 1 1 *', 'Asia/Shanghai', '2027-09-04T12:00:00Z', 2)).toEqual(['2027-12-31T16:00:00.000Z', '2028-12-31T16:00:00.000Z']);
    const fromStart = scheduleRepeatStrategy(Date.parse('2027-01-01T00:00:00Z'), { pattern: '0 0 * * *', tz: 'America/Santiago', startDate: '2027-09-04T12:00:00Z' });
    expect(new Date(fromStart as number).toISOString()).toBe('2027-09-05T04:00:00.000Z');
    expect(() => nextScheduleTick('0 0 30 2 *', 'UTC', Date.now())).toThrow();
  });
});
