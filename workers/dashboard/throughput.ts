/**
 * Lines done per job over time, sampled by the dashboard each tick (in this process's memory: a
 * restarted dashboard starts its charts afresh; the averages come from Redis and stay right).
 */
const WINDOW_MS = 5_000;
const KEEP_SAMPLES = 600;

interface Sample {
  t: number;
  /** Lines done, plus what earlier drops took away: it never goes down. */
  done: number;
}

export class ThroughputTracker {
  private readonly samples = new Map<string, Sample[]>();
  /** Per job, the lines a retry took out of its count (the open shards it embeds again). */
  private readonly dropped = new Map<string, number>();

  record(id: string, linesDone: number, t = Date.now()): void {
    let list = this.samples.get(id);
    if (!list) this.samples.set(id, (list = []));
    // A retry rebuilds the count from the written shards, lower than before: read as a pause, not
    // as negative lines a second (as a counter reset is read), so rates stay rates.
    const previous = list.at(-1)?.done ?? 0;
    let dropped = this.dropped.get(id) ?? 0;
    if (linesDone + dropped < previous) this.dropped.set(id, (dropped = previous - linesDone));
    const done = linesDone + dropped;
    const last = list.at(-1);
    if (last && last.done === done && list.length > 1 && list.at(-2)!.done === done) last.t = t;
    else list.push({ t, done });
    if (list.length > KEEP_SAMPLES) list.splice(0, list.length - KEEP_SAMPLES);
  }

  /** Lines per second over the last few seconds. */
  now(id: string, t = Date.now()): number {
    const list = this.samples.get(id) ?? [];
    const last = list.at(-1);
    if (!last || t - last.t > WINDOW_MS * 2) return 0;
    // Over the whole window, as the chart reads it: from the sample inside it, a job moving again
    // after a pause (a retry, an outage) showed its first second's burst as the rate (133 lines/s
    // for a job going at 60).
    const from = last.t - WINDOW_MS;
    const after = list.findIndex((sample) => sample.t > from);
    const [t0, done0] = after <= 0 ? [list[0]!.t, list[0]!.done] : countAt(list[after - 1]!, list[after]!, from);
    return last.t > t0 ? ((last.done - done0) * 1000) / (last.t - t0) : 0;
  }

  /** `[time ms, lines/s]` points for the job's chart, each over the few seconds before it (smooths bursts such as a shard's blank lines counted at once). */
  history(id: string): Array<[number, number]> {
    const list = this.samples.get(id) ?? [];
    const points: Array<[number, number]> = [];
    let start = 0;
    for (let i = 1; i < list.length; i += 1) {
      const b = list[i]!;
      const previous = list[i - 1]!;
      // `record` keeps a stretch without progress as two samples, its first and its last. The rate
      // is 0 from a window after the stretch began: without that point the chart slid down to 0
      // across the whole stretch, for a job that had stopped at once.
      if (b.done === previous.done && b.t - previous.t > WINDOW_MS) points.push([previous.t + WINDOW_MS, 0]);
      const from = b.t - WINDOW_MS;
      while (start < i - 1 && list[start + 1]!.t <= from) start += 1;
      // The count where the window starts, read between the samples around it: taking the sample
      // before it spread a job's first seconds after such a stretch over the whole stretch.
      const [t0, done0] = countAt(list[start]!, list[start + 1]!, from);
      if (b.t > t0) points.push([b.t, Math.round(((b.done - done0) * 1000) / (b.t - t0))]);
    }
    return points;
  }

  /** Drops jobs no longer listed, so memory follows the job list. */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const id of this.samples.keys()) if (!ids.has(id)) this.samples.delete(id);
    for (const id of this.dropped.keys()) if (!ids.has(id)) this.dropped.delete(id);
  }
}

/** `[time, count]` where a window starting at `from` begins: read between the samples around it, or `a` itself when it is not before `from`. */
function countAt(a: Sample, next: Sample, from: number): [number, number] {
  return a.t < from ? [from, a.done + ((next.done - a.done) * (from - a.t)) / (next.t - a.t)] : [a.t, a.done];
}
