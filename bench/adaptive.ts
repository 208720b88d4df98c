/**
 * The adaptive-quota scenarios of `npm run bench` (`--only adaptive`): the gate told the wrong
 * quota, a second job after the first learned it, an account shared with another client, and a
 * quota halved then restored mid-run. Emulator at 1,200 QPM with realistic latency, two workers,
 * dimension 256 dense (cheap responses, so the gate is measured rather than the CPU).
 */
import { submitCorpusJob } from '../jobs/enqueue.js';
import { QUEUES } from '../jobs/queues.js';
import { loadSettings } from '../src/config.js';
import type { EmulatorStats } from '../src/emulator/server.js';
import { startSteadyClient, type SteadySecond } from '../src/emulator/steady-client.js';
import { parseJobOptions } from '../src/job-options.js';
import { createLogger } from '../src/logger.js';
import { sleep } from '../src/sleep.js';
import { createServices, type Services } from '../workers/services.js';
import { benchCorpus, benchWordsCorpus } from './corpus.js';
import { spawnEmulator, spawnWorker, type EmulatorProcess, type WorkerProcess } from './processes.js';

const REAL_QPM = 1_200;
const PER_SECOND = REAL_QPM / 60;
const LATENCY = '150,220,400';
const WORKERS = 2;
const CONCURRENCY = 32;
const JOB = { outputType: 'dense', dimension: 256 } as const;

export interface AdaptiveFigures {
  scenario: string;
  /** embedq's accepted requests per second over the run after its first 5 s, over what it could have had. */
  utilisation: number;
  share429: number;
  share429After5s: number;
  /** First second after which 5 seconds pass with no 429 and ≥ 90% of the available rate (NaN: never). */
  secondsToConverge: number;
  otherShare429After5s?: number | undefined;
  /** Quota change only: 429 share from 5 s after the halving until the restore. */
  share429HalvedAfter5s?: number | undefined;
  /** Quota change only: seconds from the restore until a 3-second mean of ≥ 95% of the full quota. */
  secondsBackTo95?: number | undefined;
  /** Token-bound scenarios only: tokens accepted a second after the first 5 s, and the job's seconds. */
  tokensPerSecond?: number | undefined;
  seconds?: number | undefined;
  requests: number;
  accepted: number;
  perSecond: Array<[number, number]>;
}

interface RunOptions {
  redisUrl: string;
  prefix: string;
  corpus: string;
  output: string;
  emulator: EmulatorProcess;
  told: number;
  /** Called once a second with the seconds since submit. */
  tick?: (elapsed: number) => Promise<void>;
}

/** Submits one job to already running workers and waits for it; returns the submit second. */
async function runJob(services: Services, options: RunOptions): Promise<{ startSecond: number; endSecond: number }> {
  const startSecond = Math.floor(Date.now() / 1000);
  const id = await submitCorpusJob(
    { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: services.s3 },
    parseJobOptions({ input: options.corpus, output: options.output, ...JOB }),
  );
  const started = Date.now();
  let ticked = 0;
  for (;;) {
    const record = await services.corpora.get(id);
    if (record?.state === 'completed') break;
    if (record?.state === 'failed' || record?.state === 'cancelled') throw new Error(`bench job ${record.state}: ${record.error}`);
    const elapsed = Math.floor((Date.now() - started) / 1000);
    if (options.tick && elapsed > ticked) {
      ticked = elapsed;
      await options.tick(elapsed);
    }
    await sleep(100);
  }
  return { startSecond, endSecond: Math.floor(Date.now() / 1000) };
}

function figures(
  scenario: string,
  stats: EmulatorStats,
  window: { startSecond: number; endSecond: number },
  other?: Map<number, SteadySecond>,
  /** The real limit per second at a second since submit (for the quota change). */
  limitAt: (second: number) => number = () => PER_SECOND,
): AdaptiveFigures {
  // Every second of the run, idle ones included (the history lists only seconds with activity).
  const bySecond = new Map(stats.history.map((second) => [second.second, second]));
  const seconds = Array.from({ length: Math.max(0, window.endSecond - window.startSecond) }, (_, offset) => {
    const second = window.startSecond + offset;
    return bySecond.get(second) ?? { second, requests: 0, accepted: 0, rows: 0, tokens: 0, rateLimited: 0, failed: 0 };
  });
  const embedq = seconds.map((second) => {
    const o = other?.get(second.second) ?? { sent: 0, limited: 0, accepted: 0 };
    return { second: second.second - window.startSecond, requests: second.requests - o.sent, accepted: second.accepted - o.accepted, limited: second.rateLimited - o.limited, available: limitAt(second.second - window.startSecond) - o.accepted };
  });
  const sum = (rows: typeof embedq, pick: (row: (typeof embedq)[number]) => number): number => rows.reduce((total, row) => total + pick(row), 0);
  const after5 = embedq.filter((row) => row.second >= 5);
  const steady = after5.slice(0, -2); // the last seconds drain the queue
  let converge = NaN;
  for (let index = 0; index + 5 <= embedq.length; index++) {
    const next = embedq.slice(index, index + 5);
    if (next.every((row) => row.limited === 0 && row.accepted >= row.available * 0.9)) {
      converge = embedq[index]!.second;
      break;
    }
  }
  let otherShare: number | undefined;
  if (other) {
    const otherAfter = [...other].filter(([second]) => second >= window.startSecond + 5 && second < window.endSecond).map(([, entry]) => entry);
    otherShare = otherAfter.reduce((total, entry) => total + entry.limited, 0) / Math.max(1, otherAfter.reduce((total, entry) => total + entry.sent, 0));
  }
  return {
    scenario,
    utilisation: sum(steady, (row) => row.accepted) / Math.max(1, sum(steady, (row) => row.available)),
    share429: sum(embedq, (row) => row.limited) / Math.max(1, sum(embedq, (row) => row.requests)),
    share429After5s: sum(after5, (row) => row.limited) / Math.max(1, sum(after5, (row) => row.requests)),
    secondsToConverge: converge,
    otherShare429After5s: otherShare,
    requests: sum(embedq, (row) => row.requests),
    accepted: sum(embedq, (row) => row.accepted),
    perSecond: embedq.map((row) => [row.accepted, row.limited]),
  };
}

/** Workers, a fresh emulator and a Redis prefix of their own for one scenario. */
async function withSetup<T>(
  redisUrl: string,
  prefix: string,
  told: number,
  work: (services: Services, emulator: EmulatorProcess, workers: WorkerProcess[]) => Promise<T>,
  emulatorFlags: readonly string[] = [],
  /** The token scenarios: one worker, and the TPM it is told (else the default). */
  setup: { workers?: number; toldTpm?: number } = {},
): Promise<T> {
  const emulator = await spawnEmulator(['--qpm', String(REAL_QPM), '--tpm', '0', '--token-counting', 'estimate', '--latency-ms', LATENCY, ...emulatorFlags]);
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redisUrl, EMBEDQ_REDIS_PREFIX: prefix, DASHSCOPE_BASE_URL: emulator.url, EMBEDQ_QPM: String(told), LOG_LEVEL: 'info' };
  delete env.DASHSCOPE_API_KEY;
  delete env.DASHSCOPE_REGION;
  delete env.EMBEDQ_TPM;
  if (setup.toldTpm !== undefined) env.EMBEDQ_TPM = String(setup.toldTpm);
  const services = createServices(loadSettings(env), createLogger({ level: 'silent' }));
  const workers: WorkerProcess[] = [];
  try {
    for (let index = 0; index < (setup.workers ?? WORKERS); index += 1) workers.push(spawnWorker(env, CONCURRENCY));
    await sleep(1_500);
    return await work(services, emulator, workers);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await services.close();
    await emulator.stop();
  }
}

/** The scenarios by name, for `--scenario` (tuning one at a time). */
export type AdaptiveScenario = 'unknown' | 'shared' | 'neighbour' | 'change' | 'random' | 'tokens' | 'frontier';

/** Random RateQuota 429s in the random-refusals scenario: refusals that do not depend on the rate. */
const RANDOM_429_RATE = 0.05;

/**
 * The neighbour scenario: an account of 600 QPM, where the neighbour's 30% (3 a second) is more
 * than the nudges give up of the 10 a second embedq learned alone (at 1,200 QPM they suffice); it
 * starts 15 s after embedq's submit.
 */
const NEIGHBOUR_QPM = 600;
const NEIGHBOUR_AT = 15;

/**
 * The token-bound scenario: an account of 1,200,000 TPM (20,000 tokens a second) and no request
 * limit, lines of 600 common English words (~600 tokens by the emulator's exact count, ~1,400 by
 * embedq's estimate: a request reserves over twice what it uses), one worker; told the right TPM,
 * then 5× too much. One worker told the right TPM used to sit in slow start for good. A request is
 * ~6,000 tokens, so three fit in the emulator's 1-second window: ~90% is the most any sender gets.
 */
const TOKENS_TPM = 1_200_000;
const TOKENS_LINES = 1_200;

/**
 * The frontier of the shared account (`--scenario frontier`, not in the default run): embedq told
 * a fixed rate, a share of what the other client leaves, so nothing is learned; what the other
 * client's 429 share is at each. It shows what any gate could reach against this emulator.
 */
const FRONTIER_SHARES = [0.9, 0.93, 0.95, 0.97];

export async function adaptiveScenarios(redisUrl: string, folder: string, quick: boolean, only?: AdaptiveScenario): Promise<AdaptiveFigures[]> {
  // 200 lines a second at the real quota: 45 s of work, 22 s for the second job.
  const lines = quick ? 3_000 : 9_000;
  const corpus = await benchCorpus(folder, lines);
  const secondCorpus = await benchCorpus(folder, Math.round(lines / 2));
  const results: AdaptiveFigures[] = [];
  const base = { redisUrl, corpus };

  const runs = (scenario: AdaptiveScenario): boolean => only === undefined || only === scenario;

  if (runs('unknown')) {
    console.log(`\n5. unknown quota: told 6,000 QPM, the emulator allows ${REAL_QPM}; then a second job with the learned limit (${lines} lines, dim 256 dense)`);
    await withSetup(redisUrl, 'bench-unknown', 6_000, async (services, emulator, workers) => {
      const first = await runJob(services, { ...base, prefix: 'bench-unknown', output: `${folder}/unknown-1`, emulator, told: 6_000 });
      results.push(figures('unknown quota, told 5× too much', await emulator.stats(), first));
      printCuts(workers, first);
      await sleep(6_000); // an idle gap, as between two jobs
      const second = await runJob(services, { ...base, corpus: secondCorpus, prefix: 'bench-unknown', output: `${folder}/unknown-2`, emulator, told: 6_000 });
      const figure = figures('a second job after the first learned the limit', await emulator.stats(), second);
      // Its 429 share from its first second (the 5-s allowance does not apply).
      results.push({ ...figure, share429After5s: figure.share429 });
      printCuts(workers, second);
    });
    for (const result of results.slice(-2)) printResult(result);
  }

  if (runs('shared')) {
    console.log(`\n6. shared account: another client sends 30% of ${REAL_QPM} QPM throughout; embedq told the account's ${REAL_QPM}`);
    await withSetup(redisUrl, 'bench-shared', REAL_QPM, async (services, emulator, workers) => {
      const other = startSteadyClient(emulator.url, PER_SECOND * 0.3);
      await sleep(3_000);
      const run = await runJob(services, { ...base, prefix: 'bench-shared', output: `${folder}/shared`, emulator, told: REAL_QPM });
      const bySecond = await other.stop();
      const seconds = [...bySecond].filter(([second]) => second >= run.startSecond && second < run.endSecond);
      console.log(`  other client, 429s per second since embedq's submit: ${seconds.map(([, entry]) => entry.limited).join(' ')}`);
      results.push(figures('shared account (other client 30%)', await emulator.stats(), run, bySecond));
      printCuts(workers, run);
    });
    printResult(results.at(-1)!);
  }

  if (runs('neighbour')) {
    console.log(`\n6b. a neighbour arrives: told 6,000 QPM, embedq learns the account's ${NEIGHBOUR_QPM} alone; at ${NEIGHBOUR_AT} s another client starts sending 30% of it`);
    const perSecond = NEIGHBOUR_QPM / 60;
    await withSetup(redisUrl, 'bench-neighbour', 6_000, async (services, emulator, workers) => {
      let other: ReturnType<typeof startSteadyClient> | undefined;
      let arrivedSecond = NaN;
      const run = await runJob(services, {
        ...base,
        corpus: secondCorpus, // at 10 a second, 75 s of work
        prefix: 'bench-neighbour',
        output: `${folder}/neighbour`,
        emulator,
        told: 6_000,
        tick: async (elapsed) => {
          if (elapsed === NEIGHBOUR_AT) {
            arrivedSecond = Math.floor(Date.now() / 1000);
            other = startSteadyClient(emulator.url, perSecond * 0.3);
          }
        },
      });
      const bySecond = (await other?.stop()) ?? new Map<number, SteadySecond>();
      const seconds = [...bySecond].filter(([second]) => second < run.endSecond);
      console.log(`  other client, 429s per second since it started: ${seconds.map(([, entry]) => entry.limited).join(' ')}`);
      // Measured from the neighbour's arrival: what embedq had of what it left, and the neighbour's 429s from 5 s after.
      const after = seconds.filter(([second]) => second >= arrivedSecond + 5).map(([, entry]) => entry);
      const figure = figures(`a neighbour arrives (30% of ${NEIGHBOUR_QPM} QPM) after the limit was learned`, await emulator.stats(), { startSecond: arrivedSecond, endSecond: run.endSecond }, bySecond, () => perSecond);
      const share = after.reduce((total, entry) => total + entry.limited, 0) / Math.max(1, after.reduce((total, entry) => total + entry.sent, 0));
      results.push({ ...figure, otherShare429After5s: share });
      printCuts(workers, run);
    }, ['--qpm', String(NEIGHBOUR_QPM)]);
    printResult(results.at(-1)!);
  }

  if (only === 'frontier') {
    const left = PER_SECOND * 0.7;
    for (const share of FRONTIER_SHARES) {
      // The gate paces at 99% of a configured limit (EMBEDQ_TARGET_UTILIZATION): told 1/0.99 of the share.
      const told = Math.round((left * share * 60) / 0.99);
      console.log(`\n6f. shared account frontier: embedq told ${told} QPM (${(share * 100).toFixed(0)}% of the ${left}/s the other client leaves)`);
      await withSetup(redisUrl, `bench-frontier-${told}`, told, async (services, emulator, workers) => {
        const other = startSteadyClient(emulator.url, PER_SECOND * 0.3);
        await sleep(3_000);
        const run = await runJob(services, { ...base, prefix: `bench-frontier-${told}`, output: `${folder}/frontier-${told}`, emulator, told });
        const bySecond = await other.stop();
        results.push(figures(`shared account, embedq told ${(share * 100).toFixed(0)}% of what is left`, await emulator.stats(), run, bySecond));
        printCuts(workers, run);
      });
      printResult(results.at(-1)!);
    }
  }

  if (runs('change')) {
    console.log(`\n7. quota change: told ${REAL_QPM} (right); halved at 12 s, restored at 27 s`);
    await withSetup(redisUrl, 'bench-change', REAL_QPM, async (services, emulator, workers) => {
      const setLimit = (qpm: number): Promise<Response> => fetch(`${emulator.url}/emulator/limits`, { method: 'POST', body: JSON.stringify({ qpm }) });
      let halvedAt = NaN;
      let restoredAt = NaN;
      const run = await runJob(services, {
        ...base,
        prefix: 'bench-change',
        output: `${folder}/change`,
        emulator,
        told: REAL_QPM,
        tick: async (elapsed) => {
          if (elapsed === 12) {
            halvedAt = elapsed;
            await setLimit(REAL_QPM / 2);
          }
          if (elapsed === 27) {
            restoredAt = elapsed;
            await setLimit(REAL_QPM);
          }
        },
      });
      // The limit in force each second: halved from the halving's second to the restore's.
      const limitAt = (second: number): number => (second >= halvedAt && second < restoredAt ? PER_SECOND / 2 : PER_SECOND);
      const figure = figures('quota halved mid-run, then restored', await emulator.stats(), run, undefined, limitAt);
      const rows = figure.perSecond.map(([accepted, limited], second) => ({ second, accepted, limited }));
      const halved = rows.filter((row) => row.second >= halvedAt + 5 && row.second < restoredAt);
      const share = halved.reduce((total, row) => total + row.limited, 0) / Math.max(1, halved.reduce((total, row) => total + row.accepted + row.limited, 0));
      let back = NaN;
      for (const row of rows.filter((entry) => entry.second >= restoredAt)) {
        const window = rows.filter((entry) => entry.second > row.second - 3 && entry.second <= row.second);
        if (window.length === 3 && window.reduce((total, entry) => total + entry.accepted, 0) / 3 >= PER_SECOND * 0.95) {
          back = row.second - restoredAt;
          break;
        }
      }
      results.push({ ...figure, share429HalvedAfter5s: share, secondsBackTo95: back });
      printCuts(workers, run);
    });
    printResult(results.at(-1)!);
  }
  if (runs('tokens')) {
    const corpus = await benchWordsCorpus(folder, TOKENS_LINES);
    for (const told of [TOKENS_TPM, TOKENS_TPM * 5]) {
      const name = told === TOKENS_TPM ? 'token-bound, one worker told the right TPM' : 'token-bound, one worker told 5× the TPM';
      console.log(`\n5t. ${name}: the emulator allows ${TOKENS_TPM.toLocaleString('en-US')} TPM (exact counts), embedq told ${told.toLocaleString('en-US')}; ${TOKENS_LINES} lines of ~600 tokens`);
      const prefix = `bench-tokens-${told}`;
      await withSetup(
        redisUrl,
        prefix,
        6_000,
        async (services, emulator, workers) => {
          const run = await runJob(services, { redisUrl, corpus, prefix, output: `${folder}/tokens-${told}`, emulator, told: 6_000 });
          results.push(tokenFigures(name, await emulator.stats(), run));
          printCuts(workers, run);
        },
        ['--qpm', '0', '--tpm', String(TOKENS_TPM), '--token-counting', 'exact'],
        { workers: 1, toldTpm: told },
      );
      printResult(results.at(-1)!);
    }
  }

  if (runs('random')) {
    console.log(`\n7b. random refusals: told ${REAL_QPM} (right); the emulator also refuses ${RANDOM_429_RATE * 100}% of requests with RateQuota 429s at random`);
    await withSetup(
      redisUrl,
      'bench-random',
      REAL_QPM,
      async (services, emulator, workers) => {
        const run = await runJob(services, { ...base, prefix: 'bench-random', output: `${folder}/random`, emulator, told: REAL_QPM });
        results.push(figures(`random RateQuota 429s (${RANDOM_429_RATE * 100}%), told the right quota`, await emulator.stats(), run));
        printCuts(workers, run);
      },
      ['--fail-rate-429', `requests=${RANDOM_429_RATE}`],
    );
    printResult(results.at(-1)!);
  }
  return results;
}

/** A token-bound run's figures: utilisation of the token limit after the first 5 s (the last second, partial, left out). */
function tokenFigures(scenario: string, stats: EmulatorStats, window: { startSecond: number; endSecond: number }): AdaptiveFigures {
  const request = figures(scenario, stats, window);
  const bySecond = new Map(stats.history.map((second) => [second.second, second.tokens]));
  const steady = Array.from({ length: Math.max(0, window.endSecond - window.startSecond - 6) }, (_, offset) => bySecond.get(window.startSecond + 5 + offset) ?? 0);
  const tokensPerSecond = steady.reduce((sum, tokens) => sum + tokens, 0) / Math.max(1, steady.length);
  return { ...request, utilisation: tokensPerSecond / (TOKENS_TPM / 60), secondsToConverge: NaN, tokensPerSecond: Math.round(tokensPerSecond), seconds: window.endSecond - window.startSecond };
}

const CUT_WORDS = { cut: 'cut to', nudge: 'nudged to', dip: 'dipped, then to', restore: 'restored to' } as const;

/** The gate's cuts and nudges since a job's submit second: `12.3 s cut to 1100/min`. */
function printCuts(workers: readonly WorkerProcess[], window: { startSecond: number; endSecond: number }): void {
  const cuts = workers
    .flatMap((worker) => worker.cuts)
    .filter((cut) => cut.time >= window.startSecond * 1000 && cut.time < (window.endSecond + 1) * 1000)
    .sort((a, b) => a.time - b.time)
    .map((cut) => `${(cut.time / 1000 - window.startSecond).toFixed(1)} s ${cut.confirmed ? 'confirmed at' : CUT_WORDS[cut.action]} ${cut.learnedPerMinute}/min`);
  console.log(`  cuts and nudges: ${cuts.length ? cuts.join(', ') : 'none'}`);
}

/** The figures, and accepted/429s per second since submit (`14/1` = 14 accepted, one 429). */
function printResult({ perSecond, ...figures }: AdaptiveFigures): void {
  console.log(figures);
  console.log(`  per second: ${perSecond.map(([accepted, limited]) => (limited ? `${accepted}/${limited}` : `${accepted}`)).join(' ')}`);
}

const percent = (value: number | undefined, digits = 1): string => (value === undefined || !Number.isFinite(value) ? 'n/a' : `${(value * 100).toFixed(digits)}%`);

/** Rows for the results table. */
export function adaptiveRows(results: readonly AdaptiveFigures[]): string[] {
  return results.map((r) => {
    const extra = [
      r.otherShare429After5s === undefined ? undefined : `other client's 429s after 5 s: ${percent(r.otherShare429After5s, 2)}`,
      r.tokensPerSecond === undefined ? undefined : `${r.tokensPerSecond.toLocaleString('en-US')} tokens a second of ${(TOKENS_TPM / 60).toLocaleString('en-US')} from 5 s on; the job took ${r.seconds} s`,
      r.share429HalvedAfter5s === undefined ? undefined : `429s from 5 s after halving: ${percent(r.share429HalvedAfter5s, 2)}; back to ≥ 95% ${Number.isFinite(r.secondsBackTo95) ? `${r.secondsBackTo95} s` : 'not within the run'} after the restore`,
    ]
      .filter(Boolean)
      .join('; ');
    return `| ${r.scenario} | ${percent(r.utilisation)} | ${percent(r.share429, 2)} overall, ${percent(r.share429After5s, 2)} after 5 s (${r.requests} requests) | ${Number.isFinite(r.secondsToConverge) ? `${r.secondsToConverge} s` : 'n/a'} | ${extra} |`;
  });
}
