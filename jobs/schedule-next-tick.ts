import type { RepeatOptions, RepeatStrategy } from 'bullmq';
import { CronExpressionParser } from 'cron-parser';

/**
 * The next tick of a schedule: the one computation behind BullMQ's Job Scheduler (as its
 * `repeatStrategy`), `schedule add` and a worker's schedules-file check. Pure: no I/O.
 *
 * cron-parser reads the pattern, but only on the wall clock as UTC, where no hour is skipped or
 * repeated; this file maps wall-clock times to instants itself. In the zone itself cron-parser
 * 5.10.6 threw ("loop limit exceeded") for a daily tick after Lord Howe's April change (BullMQ
 * swallowed it and the schedule never ticked again), went back in time for an hourly one there and
 * for Chatham's `*\/15` (a run dozens of times a minute), and lost the day of a tick that Lord
 * Howe's or Chatham's spring change skips.
 *
 * Daylight saving (README "Daylight saving"):
 * - a wall-clock time the clocks skip runs later by the clocks' own jump, on its day (Berlin's
 *   02:30 at 03:30; Lord Howe's 02:00 at 02:30);
 * - a wall-clock time the clocks repeat runs once, in its first pass, unless the pattern ticks in
 *   every hour (`0 * * * *`, `*\/15 * * * *`): that one ticks in both passes, as the clock shows.
 */

/** Change of UTC offset found in a day's step; no zone changes its offset twice in a day. */
const STEP_MS = 24 * 60 * 60 * 1_000;
/** A pattern that matches nothing for this many offset periods in a row is refused, not looped on. */
const MAX_SEGMENTS = 1_000;

interface Transition {
  /** The first instant (ms) with the new offset. */
  at: number;
  offsetBeforeMs: number;
  offsetAfterMs: number;
}

/** The first tick strictly after `afterMillis`. Throws for a pattern cron-parser refuses or that never matches. */
export function nextScheduleTick(pattern: string, tz: string, afterMillis: number): number {
  const everyHour = CronExpressionParser.parse(pattern, { tz: 'UTC' }).fields.hour.values.length === 24;
  const offsetOf = offsetReader(tz);
  // Ticks come strictly after `after`; `offset` holds from `segmentStart` to the next change.
  let after = afterMillis;
  let offset = offsetOf(after);
  let segmentStart = after;
  let previous = transitionBetween(offsetOf, after - STEP_MS, after);
  for (let segment = 0; segment < MAX_SEGMENTS; segment++) {
    const candidates: number[] = [];
    // The wall-clock times of this offset; after a change back, those of the repeated hour only if
    // the pattern ticks every hour (the others ran in the first pass).
    let wallFrom = after + offset;
    if (previous && previous.offsetBeforeMs > offset && !everyHour) wallFrom = Math.max(wallFrom, previous.at + previous.offsetBeforeMs - 1);
    candidates.push(nextWallTick(pattern, wallFrom) - offset);
    // After a change forward, the wall-clock times it skipped, each later by the jump.
    if (previous && previous.offsetBeforeMs < offset) {
      const skippedWall = nextWallTick(pattern, Math.max(after + previous.offsetBeforeMs, previous.at + previous.offsetBeforeMs - 1));
      if (skippedWall < previous.at + offset) candidates.push(skippedWall - previous.offsetBeforeMs);
    }
    const earliest = Math.min(...candidates);
    const change = transitionBetween(offsetOf, segmentStart, earliest);
    if (!change) return earliest;
    // The offset changes first: look again from the change, with the new offset.
    previous = change;
    offset = change.offsetAfterMs;
    segmentStart = change.at;
    after = change.at - 1;
  }
  throw new Error(`no tick found for "${pattern}" in ${tz}`);
}

/**
 * BullMQ's `repeatStrategy` (Queue and Worker `settings`): as BullMQ's default, the first tick after
 * `millis` (or after `startDate`, if later), but through nextScheduleTick, so it is never at or
 * before the tick just run and it throws rather than silently planning none.
 */
export const scheduleRepeatStrategy: RepeatStrategy = (millis: number, options: RepeatOptions): number => {
  if (options.immediately) return Date.now();
  const startMillis = options.startDate === undefined ? 0 : new Date(options.startDate).getTime();
  const tz = options.tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
  return nextScheduleTick(options.pattern!, tz, Math.max(millis, startMillis));
};

/** The first wall-clock time (as a UTC epoch) strictly after `wallMillis` that the pattern matches. */
function nextWallTick(pattern: string, wallMillis: number): number {
  return CronExpressionParser.parse(pattern, { tz: 'UTC', currentDate: new Date(wallMillis) }).next().getTime();
}

/** UTC offset (ms, east positive) of the zone at an instant, to the second. */
function offsetReader(tz: string): (millis: number) => number {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
    hourCycle: 'h23',
    era: 'short',
  });
  return (millis) => {
    const seconds = Math.floor(millis / 1_000) * 1_000;
    const parts = Object.fromEntries(format.formatToParts(new Date(seconds)).map((part) => [part.type, part.value]));
    const year = parts.era === 'BC' ? 1 - Number(parts.year) : Number(parts.year);
    const wall = Date.UTC(year, Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second));
    return wall - seconds;
  };
}

/** The first offset change in (from, until], or null. */
function transitionBetween(offsetOf: (millis: number) => number, from: number, until: number): Transition | null {
  let low = from;
  const lowOffset = offsetOf(low);
  while (low < until) {
    const high = Math.min(low + STEP_MS, until);
    if (offsetOf(high) !== lowOffset) return narrow(offsetOf, low, high);
    low = high;
  }
  return null;
}

/** Binary search, to the second, for the change between `low` and `high`. */
function narrow(offsetOf: (millis: number) => number, low: number, high: number): Transition {
  const offsetBeforeMs = offsetOf(low);
  let before = Math.floor(low / 1_000);
  let at = Math.floor(high / 1_000);
  while (at - before > 1) {
    const middle = Math.floor((before + at) / 2);
    if (offsetOf(middle * 1_000) === offsetBeforeMs) before = middle;
    else at = middle;
  }
  return { at: Math.max(at * 1_000, low + 1), offsetBeforeMs, offsetAfterMs: offsetOf(at * 1_000) };
}
