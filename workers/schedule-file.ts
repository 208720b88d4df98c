import { readFile } from 'node:fs/promises';

import { distance } from 'fastest-levenshtein';
import * as z from 'zod';

import { QUEUES } from '../jobs/queues.js';
import { assertScheduleName } from '../jobs/schedule-name.js';
import { assertNoOverlap, scheduleOverlap } from '../jobs/schedule-overlap.js';
import { installScheduler, nextTick, removeScheduler, type ScheduleDefinition } from '../jobs/schedule-store.js';
import { hasPlaceholder, renderTemplate, validateCron, validateRoot, validateTemplate } from '../jobs/schedule-template.js';
import { ConfigError } from '../src/errors.js';
import { JOB_OPTION_NAMES, parseJobOptions } from '../src/job-options.js';
import type { Logger } from '../src/logger.js';
import { scheduleStore } from './schedule-tick.js';
import type { Services } from './services.js';

/**
 * Writing schedules: one from `embedq schedule add`, or a file's (`schedule export` writes it,
 * `schedule apply` reads it), so they can live in version control beside the deployment and come
 * back when Redis loses them: a worker given the file (`EMBEDQ_SCHEDULES_FILE`) puts back every
 * schedule Redis no longer has.
 */

/** How often a worker with a schedules file looks for schedules Redis lost. */
export const RESTORE_INTERVAL_MS = 60_000;

/** A schedule's own input and output are its `input` and `out`; `options` holds the rest. */
const SCHEDULE_OPTION_NAMES = JOB_OPTION_NAMES.filter((name) => name !== 'input' && name !== 'output');

// Strict: a misspelt key (`dimesion`, `timezone`) was dropped and its default applied, exit 0.
const ScheduleFile = z.strictObject({ version: z.literal(1), schedules: z.array(z.unknown()) });
const ScheduleEntry = z.strictObject({
  name: z.string(),
  cron: z.string(),
  tz: z.string().default('UTC'),
  input: z.string(),
  out: z.string(),
  // The values are checked as any submit's are, with the defaults filled in (parseJobOptions).
  options: z.strictObject(Object.fromEntries(SCHEDULE_OPTION_NAMES.map((name) => [name, z.unknown().optional()]))).default({}),
  incremental: z.boolean().default(false),
  onOverlap: z.enum(['skip', 'queue']).default('skip'),
});
const KNOWN_KEYS = { file: Object.keys(ScheduleFile.shape), schedule: Object.keys(ScheduleEntry.shape), options: SCHEDULE_OPTION_NAMES };

/** What a hand-written key likely means where its spelling does not show it. */
const SYNONYMS: { [where in keyof typeof KNOWN_KEYS]?: Record<string, string> } = {
  schedule: { timezone: 'tz', zone: 'tz', output: 'out' },
  options: { input: "the schedule's input, beside cron", output: "the schedule's out, beside cron" },
};

/**
 * What every schedule must pass, from `add`'s flags or a file: its name, cron and zone, output
 * template and its root, and `--incremental` only with a placeholder. Returns a sample output for checking
 * the submit options.
 */
export function checkScheduleShape(definition: Pick<ScheduleDefinition, 'name' | 'cron' | 'tz' | 'out' | 'incremental'>): string {
  const { name, cron, tz, out } = definition;
  assertScheduleName(name);
  validateCron(cron, tz);
  validateTemplate(out);
  validateRoot(out);
  if (definition.incremental && !hasPlaceholder(out)) {
    // The run would overwrite the very shards it copies its reused vectors from.
    throw new ConfigError(`--incremental needs a placeholder in --out ("${out}" re-runs into the output it would reuse); add {date}, {time} or {runId}`);
  }
  return renderTemplate(out, { tickMillis: Date.now(), tz, runId: 'cj-sample-000000' });
}

/**
 * `embedq schedule export`: the schedules Redis holds, as a file `apply` reads back, and what in it
 * `apply` would refuse (undefined: nothing). An older version let some names and options in that
 * this one refuses; exported as they are, the file was refused whole by `apply` and by a worker's
 * EMBEDQ_SCHEDULES_FILE (the worker exits), so it brought nothing back after Redis lost its data.
 */
export async function exportSchedules(services: Services): Promise<{ file: string; refused: string | undefined }> {
  const store = scheduleStore(services);
  const schedules: ScheduleDefinition[] = [];
  for (const name of await store.names()) {
    const record = await store.get(name);
    if (record) schedules.push({ name, cron: record.cron, tz: record.tz, input: record.input, out: record.out, options: record.options, incremental: record.incremental, onOverlap: record.onOverlap });
  }
  const content = { version: 1, schedules };
  let refused: string | undefined;
  try {
    checkScheduleFile(content, 'the export');
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    refused = error.message;
  }
  return { file: `${JSON.stringify(content, null, 2)}\n`, refused };
}

/** Reads and checks a schedules file; every problem names the file and the schedule (ConfigError). */
export async function readScheduleFile(file: string): Promise<ScheduleDefinition[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new ConfigError(`schedules file ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return checkScheduleFile(raw, file);
}

/** Checks a schedules file's content (`file` names it in messages); every problem names the schedule (ConfigError). */
function checkScheduleFile(raw: unknown, file: string): ScheduleDefinition[] {
  const parsed = ScheduleFile.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`schedules file ${file}: ${parsed.error.issues.map((issue) => describeIssue(issue, 'file')).join('; ')}`);
  const problems: string[] = [];
  const seen = new Set<string>();
  const definitions: ScheduleDefinition[] = [];
  for (const [index, entry] of parsed.data.schedules.entries()) {
    const shape = ScheduleEntry.safeParse(entry);
    if (!shape.success) {
      const name = (entry as { name?: unknown } | null)?.name;
      for (const issue of shape.error.issues) problems.push(`schedule ${typeof name === 'string' ? name : `#${index + 1}`}: ${describeIssue(issue, 'schedule')}`);
      continue;
    }
    const definition = shape.data;
    try {
      if (seen.has(definition.name)) throw new ConfigError('named twice');
      seen.add(definition.name);
      const sample = checkScheduleShape(definition);
      // Stored with every default filled in, as `add` stores them, so a file and `add` agree.
      const { input: _input, output: _output, ...options } = parseJobOptions({ ...definition.options, input: definition.input, output: sample });
      definitions.push({ ...definition, options });
    } catch (error) {
      // Messages of several lines (every bad option) are nested under their schedule.
      const message = error instanceof Error ? error.message : String(error);
      problems.push(`schedule ${definition.name}: ${message.replaceAll('\n', '\n  ')}`);
    }
  }
  // Two schedules of the file on one root would build on each other's runs.
  definitions.forEach((definition, index) => {
    for (const earlier of definitions.slice(0, index)) {
      const overlap = scheduleOverlap(definition, earlier);
      if (overlap) problems.push(`schedule ${definition.name}: ${overlap}`);
    }
  });
  if (problems.length > 0) throw new ConfigError(`schedules file ${file}:\n- ${problems.join('\n- ')}`);
  return definitions;
}

/** One problem of a file's shape (`level`: of the file, or of one schedule); an unknown key with the key it likely means. */
function describeIssue(issue: z.core.$ZodIssue, level: 'file' | 'schedule'): string {
  if (issue.code !== 'unrecognized_keys') return `${issue.path.join('.') || '(file)'}: ${issue.message}`;
  const where = level === 'file' ? 'file' : issue.path.length === 0 ? 'schedule' : 'options';
  return issue.keys
    .map((key) => {
      const meant = likelyMeant(key, where);
      return `${[...issue.path, key].join('.')}: unknown key${meant ? ` (did you mean ${meant}?)` : ''}`;
    })
    .join('; ');
}

/**
 * The key a misspelt one likely means: the same but for case, `_` or `-` (`output_type`), at most
 * two letters off (`dimesion`), a synonym (`timezone`), or an option beside `cron` (`dimension`).
 */
function likelyMeant(key: string, where: keyof typeof KNOWN_KEYS): string | undefined {
  const synonym = SYNONYMS[where]?.[key];
  if (synonym) return synonym;
  const plain = (name: string): string => name.toLowerCase().replace(/[-_]/g, '');
  const near = (names: readonly string[]): string | undefined => {
    const close = names.filter((name) => distance(plain(name), plain(key)) <= Math.min(2, Math.floor(key.length / 3)));
    return close.length === 1 ? close[0] : undefined;
  };
  const meant = near(KNOWN_KEYS[where]);
  if (meant) return meant;
  const option = where === 'schedule' ? near(SCHEDULE_OPTION_NAMES) : undefined;
  return option && `options.${option}`;
}

/**
 * `embedq schedule add`: creates or updates one schedule and its BullMQ Job Scheduler. Refused
 * when another schedule's root would be shared or reached: each would build on the other's runs.
 */
export async function addSchedule(services: Services, definition: ScheduleDefinition): Promise<{ updated: boolean }> {
  const store = scheduleStore(services);
  return store.whileEditing(async () => {
    assertNoOverlap(definition, await store.list());
    const { updated } = await store.upsert(definition);
    await installScheduler(services.queues[QUEUES.schedule], definition);
    return { updated };
  });
}

export type ApplyOutcome = 'added' | 'updated' | 'unchanged' | 'removed';

/**
 * `embedq schedule apply`: makes Redis hold these definitions (counters and history of existing
 * schedules are kept, as with `add`); with `prune`, removes the schedules the file does not name.
 */
export async function applySchedules(services: Services, definitions: readonly ScheduleDefinition[], prune: boolean): Promise<Map<string, ApplyOutcome>> {
  const store = scheduleStore(services);
  return store.whileEditing(() => applyUnderLock(services, definitions, prune));
}

async function applyUnderLock(services: Services, definitions: readonly ScheduleDefinition[], prune: boolean): Promise<Map<string, ApplyOutcome>> {
  const store = scheduleStore(services);
  const queue = services.queues[QUEUES.schedule];
  const outcomes = new Map<string, ApplyOutcome>();
  assertNoOverlapWithKept(definitions, await store.list(), prune);
  for (const definition of definitions) {
    const existing = await store.get(definition.name);
    const same = existing !== undefined && sameDefinition(existing, definition) && (await nextTick(queue, definition.name)) !== null;
    if (!same) {
      await store.upsert(definition);
      await installScheduler(queue, definition);
    }
    outcomes.set(definition.name, same ? 'unchanged' : existing ? 'updated' : 'added');
  }
  if (prune) {
    const named = new Set(definitions.map((definition) => definition.name));
    for (const name of await store.names()) {
      if (named.has(name)) continue;
      // The record first, as `schedule remove` does (see restoreLostSchedules).
      await store.remove(name);
      await removeScheduler(queue, name);
      outcomes.set(name, 'removed');
    }
  }
  // What was applied is now what Redis holds: workers with an older file must not put back what it pruned.
  await store.recordFileCheck();
  return outcomes;
}

/**
 * A worker's check: once Redis has lost its data, every schedule of the file it no longer has is
 * put back; a schedule whose BullMQ Job Scheduler is gone gets one again. Schedules Redis has are
 * left as they are: `apply` is how a changed file takes effect, so two workers of a rolling deploy
 * never undo each other's file. A schedule missing from a Redis that kept its data was removed on
 * purpose (`schedule remove`, `apply --prune`): it stays removed (ScheduleStore.hasFileCheck).
 */
export async function restoreLostSchedules(services: Services, definitions: readonly ScheduleDefinition[], logger: Logger): Promise<string[]> {
  const store = scheduleStore(services);
  const queue = services.queues[QUEUES.schedule];
  const redisLostData = !(await store.hasFileCheck());
  const restored: string[] = [];
  for (const definition of definitions) {
    const existing = await store.get(definition.name);
    if (existing && (await nextTick(queue, definition.name)) !== null) continue;
    if (!existing && !redisLostData) continue;
    if (!existing) await store.upsert(definition);
    await installScheduler(queue, existing ?? definition);
    if (existing && !(await store.get(definition.name))) {
      // Removed (`schedule remove`, record first) since it was read: the scheduler goes too.
      await removeScheduler(queue, definition.name);
      continue;
    }
    restored.push(definition.name);
    logger.warn({ schedule: definition.name }, existing ? 'schedule had no BullMQ Job Scheduler; installed again' : 'schedule was missing from Redis; restored from the schedules file');
  }
  // Only after a restore: a check that found the mark must not write it again, or a Redis that
  // lost its data while the check ran would look intact to the next one.
  if (redisLostData) await store.recordFileCheck();
  return restored;
}

/**
 * Refuses (before anything is written) a file whose schedules overlap one Redis keeps: one the file
 * does not name, unless `--prune` removes it. Those the file names are replaced, so never in the way.
 */
function assertNoOverlapWithKept(definitions: readonly ScheduleDefinition[], existing: readonly ScheduleDefinition[], prune: boolean): void {
  const named = new Set(definitions.map((definition) => definition.name));
  const kept = prune ? [] : existing.filter((schedule) => !named.has(schedule.name));
  const problems: string[] = [];
  for (const definition of definitions) {
    try {
      assertNoOverlap(definition, kept);
    } catch (error) {
      problems.push(`schedule ${definition.name}: ${(error as Error).message.replaceAll('\n', '\n  ')}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`schedules in Redis the file does not name are in the way:\n- ${problems.join('\n- ')}`);
}

function sameDefinition(a: ScheduleDefinition, b: ScheduleDefinition): boolean {
  const fields = (d: ScheduleDefinition): string => JSON.stringify([d.cron, d.tz, d.input, d.out, d.options, d.incremental, d.onOverlap]);
  return fields(a) === fields(b);
}
