import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

import type { JobOptionsInput } from '../src/job-options.js';
import { benchCorpus } from './corpus.js';
import { memoryText } from './processes.js';

/**
 * Scenario 5, reindex (issue 11): a corpus embedded once, then again with `--reuse` of the first
 * output and nothing changed. The second run sends no request: it reads the corpus, hashes every
 * line, indexes the previous output's four small columns and copies its vectors into new shards.
 * Target: at most 10% of the first run's time at the same quota. Writes bench/results/reindex.{json,md}.
 *
 * 5b repeats it at dimension 1024 with dense and sparse vectors, where a previous shard of 10,000
 * rows is ~50 MB, against the emulator without limits: it is there for the workers' peak memory
 * (at most 300 MB, as for any run), which dimension 64 would not show.
 */

/** What run.ts's runEmbedq returns that this scenario reports. */
interface RunFigures {
  lines: number;
  seconds: number;
  requests: number;
  peakWorkerRssBytes: number;
  peakRedisBytes: number;
  baselineRedisBytes: number;
  /** The largest value of each part of the workers' `memory` lines. */
  memoryBreakdown: Record<string, number>;
}

export type RunJob = (options: { corpus: string; lines: number; workers: number; job: Partial<JobOptionsInput>; output: string }) => Promise<RunFigures>;

export async function reindexScenario(folder: string, lines: number, wideLines: number, workers: number, quota: string, run: RunJob, runUnlimited: RunJob): Promise<void> {
  const corpus = await benchCorpus(folder, lines);
  const job: Partial<JobOptionsInput> = { dimension: 64, outputType: 'dense' };
  const firstOutput = path.join(folder, 'reindex-first');
  console.log(`\n5. reindex: ${lines} lines (dimension 64, dense), ${workers} workers, ${quota}; first run, then --reuse of it with nothing changed`);
  const first = await run({ corpus, lines, workers, job, output: firstOutput });
  console.log({ first });
  const second = await run({ corpus, lines, workers, job: { ...job, reuse: firstOutput }, output: path.join(folder, 'reindex-second') });
  console.log({ second });
  const share = second.seconds / first.seconds;
  const { wideFirst, wideSecond } = await wideReindex(folder, wideLines, workers, runUnlimited);
  const table = [
    `Measured ${new Date().toISOString()} with \`npm run bench\` (its reindex scenario; alone: \`-- --only reindex\`).`,
    '',
    '| scenario | figure | value |',
    '|---|---|---|',
    `| 5. reindex (${lines} lines, dim 64 dense, ${quota}) | first run: time, requests | ${first.seconds.toFixed(1)} s, ${first.requests} |`,
    `| | reindex with --reuse, nothing changed: time, requests | ${second.seconds.toFixed(1)} s, ${second.requests} |`,
    `| | reindex / first run (target ≤ 10%) | ${(share * 100).toFixed(1)}% |`,
    `| | peak worker RSS: first run / reindex | ${mb(first.peakWorkerRssBytes)} / ${mb(second.peakWorkerRssBytes)} |`,
    `| | the reindex's largest parts (MB) | ${memoryText(second.memoryBreakdown)} |`,
    `| | peak Redis used_memory above baseline: first run / reindex | ${mb(first.peakRedisBytes - first.baselineRedisBytes)} / ${mb(second.peakRedisBytes - second.baselineRedisBytes)} |`,
    `| 5b. reindex (${wideLines} lines, dim 1024 dense&sparse, no quota) | first run / reindex: time, requests | ${wideFirst.seconds.toFixed(1)} s, ${wideFirst.requests} / ${wideSecond.seconds.toFixed(1)} s, ${wideSecond.requests} |`,
    `| | peak worker RSS: first run / reindex (target ≤ 300 MB) | ${mb(wideFirst.peakWorkerRssBytes)} / ${mb(wideSecond.peakWorkerRssBytes)} |`,
    `| | the reindex's largest parts (MB) | ${memoryText(wideSecond.memoryBreakdown)} |`,
  ].join('\n');
  console.log(`\n${table}`);
  const results = path.resolve(import.meta.dirname, 'results');
  await mkdir(results, { recursive: true });
  await writeFile(path.join(results, 'reindex.json'), `${JSON.stringify({ date: new Date().toISOString(), lines, quota, first, second, share, wide: { lines: wideLines, first: wideFirst, second: wideSecond } }, null, 2)}\n`);
  await writeFile(path.join(results, 'reindex.md'), `${table}\n`);
}

/**
 * 5b alone: `--only reindex --scenario wide` runs just this (about a minute), to compare the
 * workers' peak memory over repeated runs; it prints and writes no results file.
 */
export async function wideReindex(folder: string, wideLines: number, workers: number, runUnlimited: RunJob): Promise<{ wideFirst: RunFigures; wideSecond: RunFigures }> {
  const wideJob: Partial<JobOptionsInput> = { dimension: 1024, outputType: 'dense&sparse' };
  const wideCorpus = await benchCorpus(folder, wideLines);
  const wideFirstOutput = path.join(folder, 'reindex-wide-first');
  console.log(`\n5b. reindex: ${wideLines} lines (dimension 1024, dense&sparse), ${workers} workers, no quota; first run, then --reuse of it`);
  const wideFirst = await runUnlimited({ corpus: wideCorpus, lines: wideLines, workers, job: wideJob, output: wideFirstOutput });
  const wideSecond = await runUnlimited({ corpus: wideCorpus, lines: wideLines, workers, job: { ...wideJob, reuse: wideFirstOutput }, output: path.join(folder, 'reindex-wide-second') });
  console.log({ wideFirst, wideSecond });
  console.log(`5b peak worker RSS: first run ${mb(wideFirst.peakWorkerRssBytes)}, reindex ${mb(wideSecond.peakWorkerRssBytes)}; the reindex's largest parts (MB): ${memoryText(wideSecond.memoryBreakdown)}`);
  return { wideFirst, wideSecond };
}

const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MB`;
