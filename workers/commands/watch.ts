import { FINAL_STATES, type CorpusJobRecord } from '../../jobs/job-record.js';
import { JobLostError } from '../../jobs/job-errors.js';
import { sleep } from '../../src/sleep.js';
import type { Services } from '../services.js';
import { processedLines, progressLine } from './progress.js';

/**
 * Follows a corpus job until it ends, drawing progress on `stream` (a redrawn line on a terminal,
 * a line every 5 s otherwise). Returns the final record.
 */
export async function watchJob(
  services: Services,
  corpusJobId: string,
  stream: NodeJS.WriteStream = process.stderr,
  pollMs = 500,
): Promise<CorpusJobRecord> {
  const interactive = stream.isTTY === true;
  let lastPrinted = 0;
  const samples: Array<{ at: number; done: number }> = [];
  for (;;) {
    const record = await services.corpora.get(corpusJobId);
    if (!record) throw new JobLostError(corpusJobId);
    const now = Date.now();
    samples.push({ at: now, done: processedLines(record) });
    while (samples.length > 2 && now - samples[0]!.at > 10_000) samples.shift();
    const first = samples[0]!;
    const rate = now > first.at ? ((processedLines(record) - first.done) * 1000) / (now - first.at) : undefined;
    const line = progressLine(record, rate);
    const final = FINAL_STATES.has(record.state);
    if (interactive) {
      stream.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    } else if (final || now - lastPrinted >= 5_000) {
      stream.write(`${line}\n`);
      lastPrinted = now;
    }
    if (final) return record;
    await sleep(pollMs);
  }
}
