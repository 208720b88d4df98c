import { CronExpressionParser } from 'cron-parser';

import { ConfigError } from '../src/errors.js';
import { parseLocation } from '../src/storage/locations.js';
import { nextScheduleTick } from './schedule-next-tick.js';

/**
 * Cron checks and output templates of schedules (DESIGN "Contract": `schedule add`). Pure: no I/O.
 *
 * Placeholders: `{date}` (YYYY-MM-DD of the tick in the schedule's zone), `{time}` (HHmmss),
 * `{runId}` (the corpus job id).
 */
export const PLACEHOLDERS = ['date', 'time', 'runId'] as const;

/**
 * Refuses what BullMQ's scheduler would choke on later: a pattern that is not 5 fields (or 6 with
 * seconds), one cron-parser rejects, a hashed value (`H`), or a zone the platform does not know.
 * Returns the next tick after `now`, as the Job Scheduler plans it (schedule-next-tick.ts).
 */
export function validateCron(pattern: string, tz: string, now = Date.now()): Date {
  const fields = pattern.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) {
    throw new ConfigError(`--cron "${pattern}": expected 5 fields (minute hour day month weekday), or 6 with seconds first; got ${fields.length}`);
  }
  // cron-parser draws `H` anew at every tick unless given a seed, and BullMQ passes none: `H * * * *`
  // fired up to three times an hour, `H * * * * *` twice in a minute. An `H` after no letter is
  // one wherever it stands: after `/` (`*/H`) it slipped through a check for `^`, `,` and `-` only.
  // (`THU` is no `H`.)
  if (fields.some((field) => /(?<![A-Za-z])H/i.test(field))) {
    throw new ConfigError(`--cron "${pattern}": "H" (a hashed value) is not supported: BullMQ picks it anew at every tick, so runs would come at random; write the value (e.g. 17 * * * * for once an hour)`);
  }
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw new ConfigError(`--tz "${tz}": not an IANA time zone the platform knows (e.g. UTC, Europe/Berlin, Asia/Shanghai)`);
  }
  try {
    CronExpressionParser.parse(pattern, { tz });
    return new Date(nextScheduleTick(pattern, tz, now));
  } catch (error) {
    throw new ConfigError(`--cron "${pattern}": ${(error as Error).message}`);
  }
}

/** Refuses unknown or unclosed placeholders, so a typo is caught at `add`, not at 3 a.m. */
export function validateTemplate(template: string): void {
  for (const match of template.matchAll(/\{([^}]*)\}?/g)) {
    const name = match[1]!;
    if (!match[0].endsWith('}') || !(PLACEHOLDERS as readonly string[]).includes(name)) {
      throw new ConfigError(`--out "${template}": unknown placeholder "${match[0]}"; use {date}, {time} or {runId}`);
    }
  }
}

/**
 * Refuses a template whose root is no location: every run writes `_latest.json` there, so a
 * placeholder in an S3 bucket name (root `s3://`) embedded everything and then failed each run.
 */
export function validateRoot(template: string): void {
  if (/^s3:\/\/[^/]*\{/i.test(template)) {
    throw new ConfigError(`--out "${template}": a placeholder may not appear in the bucket name; put it in the key (s3://bucket/nightly/{date}/)`);
  }
  try {
    parseLocation(scheduleRoot(template));
  } catch (error) {
    throw new ConfigError(`--out "${template}": its root "${scheduleRoot(template)}", where _latest.json is kept, is not a location: ${(error as Error).message}`);
  }
}

export function hasPlaceholder(template: string): boolean {
  return template.includes('{');
}

/**
 * The schedule's root, where `_latest.json` lives: the template up to its first `{`, cut back to
 * the last `/` so that the root is always a folder (`s3://b/nightly-{date}/` → `s3://b/`), or the
 * output itself when there is no placeholder. So `s3://b/weekly-{date}/` has that root too: two
 * such schedules are refused (schedule-overlap.ts).
 */
export function scheduleRoot(template: string): string {
  const brace = template.indexOf('{');
  if (brace === -1) return template;
  return template.slice(0, template.lastIndexOf('/', brace) + 1);
}

/** Fills the placeholders for one run. The tick's wall-clock parts come from the schedule's zone. */
export function renderTemplate(template: string, values: { tickMillis: number; tz: string; runId: string }): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', {
      timeZone: values.tz,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
    })
      .formatToParts(new Date(values.tickMillis))
      .map((part) => [part.type, part.value]),
  );
  const replacements: Record<string, string> = {
    date: `${parts.year}-${parts.month}-${parts.day}`,
    time: `${parts.hour}${parts.minute}${parts.second}`,
    runId: values.runId,
  };
  return template.replace(/\{(date|time|runId)\}/g, (_, name: string) => replacements[name]!);
}
