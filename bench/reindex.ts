import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

import type { JobOptionsInput } from '../src/job-options.js';
import { benchCorpus } from './corpus.js';

/**
 * Scenario 5, reindex (issue 11): a corpus embedded once, then again with `--reuse` of the first
 * output and nothing changed. The second run sends no request: it reads the corpus, hashes every
 * line, indexes the previous output's four small columns and copies its vectors into new shards.
 * Target: at most 10% of the first run's time at the same quota. Writes bench/results/reindex.{json,md}.
 */

/** What run.ts's runEmbedq returns that this scenario reports. */
interface RunFigures {
  lines: number;
  seconds: number;
  requests: number;
  peakWorkerRssBytes: number;
  peakRedisBytes: number;
  baselineRedisBytes: number;
}

export type RunJob = (options: { corpus: string; lines: number; workers: number; job: Partial<JobOptionsInput>; output: string }) => Promise<RunFigures>;

export async function reindexScenario(folder: string, lines: number, workers: number, quota: string, run: RunJob): Promise<void> {
  const corpus = await benchCorpus(folder, lines);
  const job: Partial<JobOptionsInput> = { dimension: 64, outputType: 'dense' };
  const firstOutput = path.join(folder, 'reindex-first');
  console.log(`\n5. reindex: ${lines} lines (dimension 64, dense), ${workers} workers, ${quota}; first run, then --reuse of it with nothing changed`);
  const first = await run({ corpus, lines, workers, job, output: firstOutput });
  console.log({ first });
  const second = await run({ corpus, lines, workers, job: { ...job, reuse: firstOutput }, output: path.join(folder, 'reindex-second') });
  console.log({ second });
  const share = second.seconds / first.seconds;
  const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MB`;
  const table = [
    `Measured ${new Date().toISOString()} with \`npm run bench\` (its reindex scenario; alone: \`-- --only reindex\`).`,
    '',
    '| scenario | figure | value |',
    '|---|---|---|',
    `| 5. reindex (${lines} lines, dim 64 dense, ${quota}) | first run: time, requests | ${first.seconds.toFixed(1)} s, ${first.requests} |`,
    `| | reindex with --reuse, nothing changed: time, requests | ${second.seconds.toFixed(1)} s, ${second.requests} |`,
    `| | reindex / first run (target ≤ 10%) | ${(share * 100).toFixed(1)}% |`,
    `| | peak worker RSS: first run / reindex | ${mb(first.peakWorkerRssBytes)} / ${mb(second.peakWorkerRssBytes)} |`,
    `| | peak Redis used_memory above baseline: first run / reindex | ${mb(first.peakRedisBytes - first.baselineRedisBytes)} / ${mb(second.peakRedisBytes - second.baselineRedisBytes)} |`,
  ].join('\n');
  console.log(`\n${table}`);
  const results = path.resolve(import.meta.dirname, 'results');
  await mkdir(results, { recursive: true });
  await writeFile(path.join(results, 'reindex.json'), `${JSON.stringify({ date: new Date().toISOString(), lines, quota, first, second, share }, null, 2)}\n`);
  await writeFile(path.join(results, 'reindex.md'), `${table}\n`);
}
