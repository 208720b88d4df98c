import { ConfigError } from '../src/errors.js';
import { outputIdentity } from './output-lease.js';
import { CORPUS_JOB_ID } from './queues.js';
import type { ScheduleDefinition } from './schedule-store.js';
import { scheduleRoot } from './schedule-template.js';

/**
 * Which schedules may not sit side by side. A schedule keeps `_latest.json` at its root and its
 * incremental runs build on what that file names, so:
 *
 * - two schedules with the same root (`s3://b/nightly-{date}/` and `s3://b/weekly-{date}/` are both
 *   rooted at `s3://b/`; two equal outputs without placeholder) overwrite each other's pointer and
 *   reuse each other's runs, or overwrite each other's output;
 * - a schedule whose runs can land at or under another's root (`s3://b/{date}/` and
 *   `s3://b/2026-11-29/{time}/`) can render the other's outputs, or put a finished run where the
 *   other, before its first pointer, reads its root as the previous output.
 *
 * Roots merely nested are fine when the outer schedule's runs can never reach the inner root:
 * `s3://b/{date}/` and `s3://b/en/{date}/` (a date is never `en`), or a fixed output with another
 * schedule's root inside it (deeper keys are other outputs, never touched by a run).
 */

/** What each placeholder can render (schedule-template.ts, newCorpusJobId); none holds a `/`. */
const RENDERED: Record<string, string> = { date: '\\d{4}-\\d{2}-\\d{2}', time: '\\d{6}', runId: CORPUS_JOB_ID };

type Named = Pick<ScheduleDefinition, 'name' | 'out'>;

/** Why `definition` may not sit beside `other`, or undefined when they never meet. */
export function scheduleOverlap(definition: Named, other: Named): string | undefined {
  const root = outputIdentity(scheduleRoot(definition.out));
  const otherRoot = outputIdentity(scheduleRoot(other.out));
  if (root === otherRoot) {
    return root === outputIdentity(definition.out) && otherRoot === outputIdentity(other.out)
      ? `--out "${definition.out}" is also the output of schedule ${other.name} ("${other.out}"); their runs would overwrite each other`
      : `--out "${definition.out}" has the same root ${scheduleRoot(definition.out)} (where _latest.json is kept) as schedule ${other.name} ("${other.out}"); each would reuse the other's runs. Give each schedule a folder of its own before the first placeholder (s3://b/nightly/{date}/, s3://b/weekly/{date}/)`;
  }
  const [outer, inner] = root.length < otherRoot.length ? [definition, other] : [other, definition];
  if (!runsCanReach(outer, outputIdentity(scheduleRoot(inner.out)))) return undefined;
  return `--out "${definition.out}": the runs of schedule ${outer.name} ("${outer.out}") can land at or under the root ${scheduleRoot(inner.out)} of schedule ${inner.name} ("${inner.out}"), mixing their outputs`;
}

/** Refuses (ConfigError) a schedule that overlaps any of `others`; one of the same name is the one it replaces. */
export function assertNoOverlap(definition: Named, others: readonly Named[]): void {
  const problems = others.filter((other) => other.name !== definition.name).flatMap((other) => scheduleOverlap(definition, other) ?? []);
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
}

/** Whether a run of `outer` can render `innerRoot` (a folder below its root) or a folder inside it. */
function runsCanReach(outer: Named, innerRoot: string): boolean {
  const outerRoot = outputIdentity(scheduleRoot(outer.out));
  if (!innerRoot.startsWith(outerRoot)) return false;
  const below = innerRoot.slice(outerRoot.length).split('/').filter(Boolean);
  const tail = outer.out.slice(scheduleRoot(outer.out).length).split('/').filter(Boolean);
  // The outer's runs end above the inner root: the inner one lives inside them as other outputs do.
  if (tail.length < below.length) return false;
  return below.every((segment, index) => segmentPattern(tail[index]!).test(segment));
}

function segmentPattern(segment: string): RegExp {
  const source = segment
    .split(/\{(date|time|runId)\}/)
    .map((part, index) => (index % 2 === 1 ? RENDERED[part]! : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}
