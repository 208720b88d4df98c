import { text } from 'node:stream/consumers';

import type { CorpusJobRecord } from '../jobs/corpus-store.js';
import { corpusJobIdTime } from '../jobs/enqueue.js';
import { outputIdentity } from '../jobs/output-lease.js';
import { scheduleRoot } from '../jobs/schedule-template.js';
import { LATEST_FILE, MANIFEST_FILE, SUCCESS_FILE } from '../src/output/layout.js';
import type { Manifest } from '../src/output/manifest.js';
import type { Logger } from '../src/logger.js';
import type { ObjectStore } from '../src/storage/object-store.js';
import { openOutput } from './output.js';
import { scheduleStore } from './schedule-tick.js';
import type { Services } from './services.js';

/**
 * A scheduled run's end, on its schedule: a completed run moves `_latest.json` and clears the
 * schedule's last error; a failed one counts as a failure and becomes it.
 */

/** `_latest.json` at a schedule's root. */
export interface LatestPointer {
  output: string;
  job_id: string;
  /** The schedule that wrote it: an incremental run follows only its own schedule's pointer. */
  schedule: string;
  finished_at: string;
  counts: Manifest['counts'];
}

/**
 * Called by finalize once a run's `_SUCCESS` is in place (and before the job is marked completed,
 * so a crash in between repeats this on retry): points the schedule's `_latest.json` at the run,
 * unless it names a newer run, and clears the schedule's last error.
 * A failed run never gets here, so the pointer keeps naming the last good output. Ticks of one
 * schedule never overlap (ScheduleStore.claim); an older run's `retry` may, hence the check, made
 * and acted on under a lock per root.
 */
export async function publishScheduleLatest(services: Services, record: CorpusJobRecord, logger: Logger): Promise<void> {
  if (!record.schedule) return;
  const schedules = scheduleStore(services);
  const schedule = await schedules.get(record.schedule);
  if (!schedule) {
    logger.warn({ schedule: record.schedule }, 'schedule removed before its run finished; _latest.json left as it was');
    return;
  }
  const output = openOutput(record.options.output, services);
  if (!(await output.store.stat(output.prefix + SUCCESS_FILE))) {
    throw new Error(`${record.options.output} has no ${SUCCESS_FILE}; ${LATEST_FILE} not moved`);
  }
  const manifest = JSON.parse(await text(await output.store.read(output.prefix + MANIFEST_FILE))) as Manifest;
  const latest: LatestPointer = { output: record.options.output, job_id: record.id, schedule: record.schedule, finished_at: manifest.finished_at, counts: manifest.counts };
  const rootLocation = scheduleRoot(schedule.out);
  const root = openOutput(rootLocation, services);
  await schedules.whilePublishingLatest(outputIdentity(rootLocation), async () => {
    const keep = await reasonToKeepLatest(record, rootLocation, root);
    if (keep) {
      logger.warn({ schedule: record.schedule, output: latest.output }, `${LATEST_FILE} left as it is: ${keep}`);
    } else {
      await root.store.write(root.prefix + LATEST_FILE, `${JSON.stringify(latest, null, 2)}\n`);
      logger.info({ schedule: record.schedule, output: latest.output }, `${LATEST_FILE} updated`);
    }
  });
  await schedules.recordRunCompleted(record.schedule);
}

/** Why this run must not move the schedule's pointer, or undefined. */
async function reasonToKeepLatest(record: CorpusJobRecord, rootLocation: string, root: { store: ObjectStore; prefix: string }): Promise<string | undefined> {
  // The schedule's --out changed while the run went: the pointer would sit in a root that holds
  // none of its runs, naming an output elsewhere.
  if (!outputIdentity(record.options.output).startsWith(outputIdentity(rootLocation))) return `the schedule's output moved to ${rootLocation} since this run started`;
  // An older run retried after a newer one (retry does not take the schedule's slot): the pointer
  // stays on the newer, which the next incremental run must build on.
  const named = await readLatestJobId(root);
  if (named !== undefined && isNewerRun(named, record.id)) return `it names ${named}, a newer run`;
  return undefined;
}

/** The job `_latest.json` names, if it is there and reads. */
async function readLatestJobId(root: { store: ObjectStore; prefix: string }): Promise<string | undefined> {
  if (!(await root.store.stat(root.prefix + LATEST_FILE))) return undefined;
  try {
    const pointer = JSON.parse(await text(await root.store.read(root.prefix + LATEST_FILE))) as Partial<LatestPointer>;
    return typeof pointer.job_id === 'string' ? pointer.job_id : undefined;
  } catch {
    return undefined; // unreadable: this run's pointer replaces it
  }
}

/** Whether job `other` was made after job `id` (ids are time-sortable). */
function isNewerRun(other: string, id: string): boolean {
  const [otherTime, time] = [corpusJobIdTime(other), corpusJobIdTime(id)];
  return otherTime !== undefined && time !== undefined && otherTime > time;
}

/**
 * A corpus job failed: if a schedule started it, the schedule counts the failure and keeps its
 * reason (`schedule list`, the dashboard). Best effort: the job's own failure is already recorded.
 * `logger` binds `corpusJobId` (failCorpusJob's).
 */
export async function noteScheduledRunFailed(services: Services, corpusJobId: string, message: string, logger: Logger): Promise<void> {
  try {
    const record = await services.corpora.get(corpusJobId);
    if (record?.schedule) await scheduleStore(services).recordRunFailed(record.schedule, corpusJobId, message);
  } catch (error) {
    logger.warn({ err: error }, 'could not record the failed run on its schedule');
  }
}
