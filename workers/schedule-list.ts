import { QUEUES } from '../jobs/queues.js';
import { nextTick } from '../jobs/schedule-store.js';
import { scheduleStore } from './schedule-tick.js';
import type { Services } from './services.js';

/**
 * What `embedq schedule list --json` prints and the dashboard's `/api/schedules` serves: one
 * implementation behind both, so a script reads the same fields from either.
 */
export interface ScheduleListRow {
  name: string;
  cron: string;
  tz: string;
  input: string;
  out: string;
  incremental: boolean;
  on_overlap: string;
  /** Null while the schedule is paused: no tick starts a run. */
  next_run: string | null;
  /** When `schedule pause` held it, or null. */
  paused_at: string | null;
  last_run: { job_id: string; state: string; output: string | null; error: string | null } | null;
  runs: number;
  skipped: number;
  /** Ticks that never came while no worker ran (the next ran late; those after it were lost). */
  missed: number;
  failures: number;
  last_error: string | null;
}

export async function listSchedules(services: Services): Promise<ScheduleListRow[]> {
  const store = scheduleStore(services);
  const rows: ScheduleListRow[] = [];
  for (const name of await store.names()) {
    const record = await store.get(name);
    if (!record) continue;
    const next = await nextTick(services.queues[QUEUES.schedule], name);
    const job = record.lastJobId ? await services.corpora.get(record.lastJobId) : undefined;
    rows.push({
      name,
      cron: record.cron,
      tz: record.tz,
      input: record.input,
      out: record.out,
      incremental: record.incremental,
      on_overlap: record.onOverlap,
      next_run: next && record.pausedAt === null ? new Date(next).toISOString() : null,
      paused_at: record.pausedAt === null ? null : new Date(record.pausedAt).toISOString(),
      last_run: record.lastJobId
        ? { job_id: record.lastJobId, state: job?.state ?? 'expired', output: record.lastOutput, error: job?.error ?? null }
        : null,
      runs: record.runs,
      skipped: record.skipped,
      missed: record.missed,
      failures: record.failures,
      last_error: record.lastError,
    });
  }
  return rows;
}
