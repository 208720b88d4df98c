import type { CorpusJobRecord } from '../../jobs/job-record.js';
import { formatCount } from '../../src/format-count.js';

/** Lines accounted for so far: embedded, failed or blank. */
export const processedLines = (record: CorpusJobRecord): number => record.rowsEmbedded + record.rowsFailed + record.rowsBlank;

/** The state as people read it: a running job whose finalize is writing the output is `finishing`. */
export const stateLabel = (record: CorpusJobRecord): string => (record.finishing ? 'finishing' : record.state);

/** One human line: state, a bar, counts, shards. The total is known once splitting has finished. */
export function progressLine(record: CorpusJobRecord, linesPerSecond?: number): string {
  const done = processedLines(record);
  const total = record.totalLines;
  const width = 24;
  // An input with no line is all done once split (it showed 0.0%, and an empty bar, completed).
  const fraction = total === null ? 0 : total === 0 ? 1 : done / total;
  const bar = total === null ? '·'.repeat(width) : '█'.repeat(Math.round(fraction * width)).padEnd(width, '░');
  const parts = [
    `${stateLabel(record).padEnd(9)} [${bar}]`,
    total === null ? `${formatCount(done)} lines (${formatCount(record.linesRead)} read)` : `${(fraction * 100).toFixed(1)}% ${formatCount(done)}/${formatCount(total)} lines`,
    `${formatCount(record.shardsWritten)}${record.totalShards === null ? '' : `/${formatCount(record.totalShards)}`} shard${record.totalShards === null && record.shardsWritten === 1 ? '' : 's'}`,
  ];
  if (record.rowsFailed > 0) parts.push(`${formatCount(record.rowsFailed)} failed`);
  if (linesPerSecond !== undefined) parts.push(`${formatCount(Math.round(linesPerSecond))} lines/s`);
  return parts.join(' · ');
}

export function describeJob(record: CorpusJobRecord, now = Date.now()): string {
  const o = record.options;
  const lines = [
    `job       ${record.id}${record.schedule ? ` (schedule ${record.schedule})` : ''}`,
    `state     ${record.state}${record.error ? ` — ${record.errorCode}: ${record.error}` : ''}` +
      (record.finishing ? ' · finishing: every shard is written, the manifest and _SUCCESS are being written (it cannot be cancelled now)' : ''),
    ...lastRetryLines(record, now),
    `input     ${o.input}`,
    `output    ${o.output}`,
    `model     ${o.model} dim ${o.dimension} ${o.outputType} ${o.textType} via ${o.api}`,
    `progress  ${progressLine(record)}`,
    `counts    embedded ${formatCount(record.rowsEmbedded)} · blank ${formatCount(record.rowsBlank)} · failed ${formatCount(record.rowsFailed)} · truncated ${formatCount(record.rowsTruncated)} · tokens ${formatCount(record.tokens)}`,
    ...(o.reuse === undefined
      ? []
      : [
          `reuse     ${record.reuseError ? `${reuseUnavailable(record.rowsReused)}: ${record.reuseError}` : `${record.reusedFrom?.location ?? o.reuse} · reused ${formatCount(record.rowsReused)}`}` +
            (o.idField && !record.reuseError ? ` · new ${formatCount(record.rowsNew)} · changed ${formatCount(record.rowsChanged)} · unchanged ${formatCount(record.rowsUnchanged)} · deleted ${formatCount(record.rowsDeleted)}` : ''),
        ]),
    `created   ${new Date(record.createdAt).toISOString()}${record.finishedAt ? ` · finished ${new Date(record.finishedAt).toISOString()}` : ''}`,
  ];
  return lines.join('\n');
}

/**
 * Reuse given up: from the start, or after shards that copied rows were written (the previous
 * output changed under the job, and `retry` embeds the rest). It said "every line embedded" of a
 * retried job that had copied 500 rows.
 */
function reuseUnavailable(rowsReused: number): string {
  return rowsReused > 0 ? `unavailable after ${formatCount(rowsReused)} rows were reused; every other line embedded` : 'unavailable, every line embedded';
}

/** While the job runs: its steps' last failed attempt, and how long ago (a stall in retries says why). */
export function lastRetryLines(record: CorpusJobRecord, now: number): string[] {
  if (record.lastRetry === null || record.lastRetryAt === null) return [];
  if (record.state !== 'running' && record.state !== 'queued') return [];
  return [`retrying  ${record.lastRetry} (${ago(now - record.lastRetryAt)})`];
}

function ago(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 120) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  return minutes < 120 ? `${minutes} min ago` : `${Math.round(minutes / 60)} h ago`;
}

const fmt = formatCount;
