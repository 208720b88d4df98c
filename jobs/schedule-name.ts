import { ConfigError } from '../src/errors.js';

/**
 * Which names a schedule may have. Its record is the hash `<prefix>:schedule:<name>`, and BullMQ
 * keeps the `schedule` queue's own keys beside it (`<prefix>:schedule:wait`, `<prefix>:schedule:<job id>`):
 * a schedule named like one of them overwrote BullMQ's key or failed on it half-way, and every
 * schedule stopped ticking.
 */

/** BullMQ reserves `:` in ids; the name also appears in job ids and Redis keys. */
const SCHEDULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * The keys BullMQ keeps under a queue's name (QueueKeys.getKeys in bullmq's queue-keys.js, 6.7;
 * test/unit/schedule-name.test.ts holds the list to it), and two of older versions it still
 * deletes (`delay`, `priority`).
 */
export const BULLMQ_QUEUE_KEYS: readonly string[] = [
  'active',
  'wait',
  'waiting-children',
  'paused',
  'id',
  'delayed',
  'prioritized',
  'stalled-check',
  'completed',
  'failed',
  'stalled',
  'repeat',
  'limiter',
  'meta',
  'events',
  'pc',
  'marker',
  'de',
  'delay',
  'priority',
];

/** Whether the schedule's record would be one of BullMQ's keys (ScheduleStore never touches those). */
export function isBullmqQueueKey(name: string): boolean {
  return BULLMQ_QUEUE_KEYS.includes(name);
}

/** Why `name` cannot be a new schedule's (`add`, `apply`, a schedules file), or undefined. */
export function scheduleNameProblem(name: string): string | undefined {
  if (!SCHEDULE_NAME.test(name)) return 'use letters, digits, "_", "." and "-" (at most 64, no ":")';
  if (isBullmqQueueKey(name)) return bullmqKeyProblem(name);
  // BullMQ gives a job added without an id the next number, its record `<prefix>:schedule:<n>`.
  // None is added so today; refused so that one added later cannot meet a schedule's record.
  if (/^\d+$/.test(name)) return "digits only is the form of BullMQ's job ids, whose records share the schedule's key; add a letter";
  // A tick waiting under `--on-overlap queue` is the job `queued-<schedule>-<tick>-<now>` (schedule-tick.ts).
  if (/^queued-.+-\d+-\d+$/.test(name)) return "queued-<name>-<n>-<n> is the form of waiting ticks' job ids, whose records share the schedule's key; choose another name";
  return undefined;
}

/** Throws CONFIG_INVALID (exit code 2) naming the reason. */
export function assertScheduleName(name: string): void {
  const problem = scheduleNameProblem(name);
  if (problem !== undefined) throw new ConfigError(`schedule name "${name}": ${problem}`);
}

/** Throws CONFIG_INVALID for a name whose key is BullMQ's. */
export function assertNotBullmqQueueKey(name: string): void {
  if (isBullmqQueueKey(name)) throw new ConfigError(`schedule name "${name}": ${bullmqKeyProblem(name)}`);
}

function bullmqKeyProblem(name: string): string {
  return `BullMQ keeps the schedule queue's "${name}" (<prefix>:schedule:${name}) at the key the schedule's record would have; choose another name`;
}
