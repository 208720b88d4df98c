import { parseJobOptions } from '../src/job-options.js';
import { newCorpusJobId, submitCorpusJob, type SubmitDeps } from './enqueue.js';
import { OutputLeasedError } from './job-errors.js';
import { hasPlaceholder, renderTemplate, scheduleRoot } from './schedule-template.js';
import type { ScheduleStore } from './schedule-store.js';

/**
 * One run of a schedule: the path of every tick and of `schedule run`. Claims the schedule's
 * single writer slot, renders the output, re-validates the stored options, and submits.
 */
export type ScheduleRunOutcome =
  | { kind: 'submitted'; jobId: string; output: string }
  /** `ending`: the run stopped (cancelled, failed) moments ago and a step of it may still be writing. */
  | { kind: 'busy'; activeJobId: string; ending?: boolean }
  | { kind: 'failed'; error: string }
  | { kind: 'missing' }
  | { kind: 'paused'; pausedAt: number };

export interface ScheduleRunDeps extends SubmitDeps {
  schedules: ScheduleStore;
  /**
   * Gives back the output a run stopped moments ago still holds (`ending`) if none of its steps is
   * active any more; true if it did. The run is then tried once more, not refused for the rest of
   * the lease's minute (the one who stopped the run gives it back too, but may not be watching).
   */
  releaseEnded?: (jobId: string) => Promise<boolean>;
}

/**
 * `whenPaused`: a tick of a paused schedule starts nothing (`skip`); `schedule run`, an operator's
 * explicit request, runs anyway (`run`).
 */
export async function runSchedule(deps: ScheduleRunDeps, name: string, tickMillis: number, whenPaused: 'skip' | 'run'): Promise<ScheduleRunOutcome> {
  const schedule = await deps.schedules.get(name);
  if (!schedule) return { kind: 'missing' };
  if (schedule.pausedAt !== null && whenPaused === 'skip') return { kind: 'paused', pausedAt: schedule.pausedAt };
  // Redis's clock, as every id is made: run order is Redis's whichever machine runs the tick.
  const now = await deps.corpora.now();
  const runId = newCorpusJobId(now);
  const claim = await deps.schedules.claim(name, runId, deps.corpora, now);
  if (!claim.claimed) return { kind: 'busy', activeJobId: claim.activeJobId };
  const output = renderTemplate(schedule.out, { tickMillis, tz: schedule.tz, runId });
  try {
    // The stored options were valid at `add`; a newer embedq (or an edited record) may disagree.
    // `--incremental` = `--reuse <root>`: the root's `_latest.json` names the last good run.
    const options = parseJobOptions({ ...schedule.options, input: schedule.input, output, ...(schedule.incremental ? { reuse: scheduleRoot(schedule.out) } : {}) });
    const jobId = await submitCorpusJob(deps, options, {
      schedule: name,
      jobId: runId,
      // A template without placeholder re-runs into the same output and replaces the previous run's
      // files: the claim above has made sure that run has ended, so there is never a second writer.
      // With a placeholder, an output that already exists (say `{date}` ticking twice a day) is
      // refused as for any submit, and the reason shows in `schedule list`.
      overwrite: !hasPlaceholder(schedule.out),
      // That output is the schedule's root: its `_latest.json` names the run being replaced.
      withdrawLatest: !hasPlaceholder(schedule.out),
    });
    await deps.schedules.recordRun(name, tickMillis, jobId, output);
    return { kind: 'submitted', jobId, output };
  } catch (error) {
    await deps.schedules.release(name, runId, claim.previousJobId);
    // The claim saw the previous run ended, but a run stopped moments ago keeps its output for up
    // to a minute while a step of it may still be writing (a worker paused, or not yet polled).
    // That is a run still going, not a failure: a queued tick waits it out, a tick under skip is
    // skipped. Counted as a failed run, the waiting tick was lost and later ticks failed too.
    if (error instanceof OutputLeasedError && error.ending) {
      if (deps.releaseEnded && (await deps.releaseEnded(error.holder))) return runSchedule({ ...deps, releaseEnded: undefined }, name, tickMillis, whenPaused);
      return { kind: 'busy', activeJobId: error.holder, ending: true };
    }
    const message = `run at ${new Date(tickMillis).toISOString()} not started: ${error instanceof Error ? error.message : String(error)}`;
    await deps.schedules.recordFailure(name, tickMillis, message);
    return { kind: 'failed', error: message };
  }
}
