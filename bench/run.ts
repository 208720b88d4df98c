/**
 * `npm run bench`: quota-bound, side by side with a hand-rolled loop, overhead-bound, scale, and the
 * adaptive-quota scenarios (bench/adaptive.ts).
 * Real redis-server, real `embedq worker` processes and a fresh `embedq emulator` process per run
 * (the compiled build), with realistic latency and limits. Prints a table and writes bench/results/latest.{json,md}.
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { Redis } from 'ioredis';
import OpenAI from 'openai';
import pLimit from 'p-limit';

import { submitCorpusJob } from '../jobs/enqueue.js';
import { QUEUES } from '../jobs/queues.js';
import { loadSettings } from '../src/config.js';
import { decodeNativeResponse } from '../src/dashscope/decode-response.js';
import { emulatorEmbedding } from '../src/emulator/emulator-embedding.js';
import { nativeSuccessBody } from '../src/emulator/serialize-response.js';
import { parseJobOptions, type JobOptionsInput } from '../src/job-options.js';
import { createLogger } from '../src/logger.js';
import { METRICS } from '../src/metrics/metric-names.js';
import { readWorkerMetrics } from '../src/metrics/read-metrics.js';
import { sleep } from '../src/sleep.js';
import { startPrivateRedis } from '../src/redis/private-redis.js';
import { createServices } from '../workers/services.js';
import { adaptiveRows, adaptiveScenarios, type AdaptiveFigures, type AdaptiveScenario } from './adaptive.js';
import { measureClientCost } from './client-cost.js';
import { benchCorpus } from './corpus.js';
import { cpuSeconds, histogramQuantile, memoryText, percentile, rssBytes, spawnEmulator, spawnWorker, threadCpuSeconds, type WorkerProcess } from './processes.js';
import { summarizeProfile } from './profile.js';
import { reindexScenario, type RunJob, wideReindex } from './reindex.js';
import { smallObjectsScenario, type SmallObjectsFigures } from './small-objects.js';

const QUICK = process.argv.includes('--quick');
/**
 * `--only overhead` runs just scenarios 3 and 4, `--only quota` just 1 and 1b, `--only adaptive`
 * just 5-7b, `--only objects` just 9, `--only reindex` just the reindex scenario (for tuning work);
 * `--keep` keeps the work folder (profiles, outputs).
 */
const ONLY = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
/**
 * With `--only adaptive`: `--scenario unknown|shared|neighbour|change|random|tokens|frontier` runs just that one;
 * with `--only reindex`: `--scenario wide` runs just 5b.
 */
const SCENARIO = process.argv.includes('--scenario') ? (process.argv[process.argv.indexOf('--scenario') + 1] as AdaptiveScenario | 'wide') : undefined;
if (SCENARIO !== undefined && ONLY !== (SCENARIO === 'wide' ? 'reindex' : 'adaptive')) throw new Error('--scenario wide goes with --only reindex, the others with --only adaptive');
const QPM = 6_000;
const TPM = 24_000_000;
const WORKERS = 2;
const CONCURRENCY = 32;
const REALISTIC_LATENCY = { min: 150, median: 220, p99: 400 };
const QUOTA_LINES = QUICK ? 8_000 : 40_000;
const SCALE_LINES = QUICK ? 4_000 : 10_000;
/** The default shard size: the memory bound must hold at the defaults. */
const SCALE_SHARD_ROWS = 10_000;
/** Scenario 9: files, and the latency injected before each is opened. */
const SMALL_OBJECTS = QUICK ? 200 : 1_000;
const SMALL_OBJECT_GET_MS = 30;
/** Lines the DashScope client alone embeds for its CPU figure (scenario 3). */
const CLIENT_COST_LINES = 30_000;
/** text-embedding-v4's widest dense vectors. */
const WIDEST_DIMENSION = 2048;
const MEMORY_FIELDS = ['heapUsedMb', 'heapTotalMb', 'arrayBuffersMb', 'shardThreadHeapMb', 'shardThreadHeapTotalMb', 'shardThreadArrayBuffersMb', 'shardThreadWasmMb'] as const;

interface RunResult {
  lines: number;
  seconds: number;
  linesPerSecond: number;
  requests: number;
  accepted: number;
  throttled: number;
  throttledShare: number;
  /** Seconds before the steady state: until the first second at 90% of the limit (at least 3). */
  rampSeconds: number;
  steadyRequestsPerMinute: number;
  steadyTokensPerMinute: number;
  maxRequestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  workerCpuSeconds: number;
  workerCpuMicrosPerLine: number;
  /**
   * The same split by thread (summed over the workers): each main thread, the shard-encoding
   * thread (its id from the `memory` lines), and the rest (V8's GC and compiler threads, libuv's
   * pool; threads that ended before the run did are left out).
   */
  workerCpuMicrosPerLineByThread: { main: number; shardThread: number; other: number };
  peakRedisBytes: number;
  baselineRedisBytes: number;
  peakWorkerRssBytes: number;
  /** The largest value of each part of the workers' memory lines (MB). */
  memoryBreakdown: Record<string, number>;
  /** Requests the emulator accepted in each second of the run. */
  acceptedPerSecond: number[];
  /** 429s the emulator answered in each second of the run. */
  throttledPerSecond: number[];
  /** The gate's cuts and nudges: seconds since submit, the limit learned (per minute), and `nudge` for a nudge. */
  cuts: Array<[number, number, string]>;
  /**
   * Redis's load during the run, from INFO deltas: commands (those run inside Lua scripts, ours and
   * BullMQ's, included) and CPU seconds. Includes the bench's own polling, ~40 commands a second.
   */
  redisCommandsPerLine: number;
  redisCpuMicrosPerLine: number;
  /** Redis CPU seconds per second of the run: the share of one core Redis used. */
  redisCpuShare: number;
}

/** Redis's own counters: commands processed (scripts' inner calls included) and CPU seconds. */
async function redisLoad(monitor: Redis): Promise<{ commands: number; cpuSeconds: number }> {
  const [stats, cpu] = await Promise.all([monitor.info('stats'), monitor.info('cpu')]);
  const field = (text: string, name: string): number => Number(new RegExp(`${name}:([\\d.]+)`).exec(text)?.[1] ?? NaN);
  return { commands: field(stats, 'total_commands_processed'), cpuSeconds: field(cpu, 'used_cpu_user') + field(cpu, 'used_cpu_sys') };
}

/** `embedq_request_duration_seconds` as the workers flushed it to Redis: cumulative counts by upper bound (s). */
async function requestLatencyHistogram(redis: Redis, prefix: string): Promise<Array<{ le: number; count: number }>> {
  const bucket = `${METRICS.requestDuration.name}_bucket`;
  return (await readWorkerMetrics(redis, prefix))
    .filter((sample) => sample.name === bucket)
    .map((sample) => ({ le: sample.labels.le === '+Inf' ? Infinity : Number(sample.labels.le), count: sample.value }));
}

let runCounter = 0;

/** Emulator flags of the realistic, quota-bound scenarios. */
const QUOTA_EMULATOR = ['--qpm', String(QPM), '--tpm', String(TPM), '--token-counting', 'estimate', '--latency-ms', `${REALISTIC_LATENCY.min},${REALISTIC_LATENCY.median},${REALISTIC_LATENCY.p99}`];
/** No limits, no latency: what the worker itself costs. */
const OVERHEAD_EMULATOR = ['--qpm', '0', '--tpm', '0', '--token-counting', 'estimate'];

interface BenchContext {
  redisUrl: string;
  folder: string;
}

async function runEmbedq(
  context: BenchContext,
  options: { corpus: string; lines: number; workers: number; job: Partial<JobOptionsInput>; emulator: string[]; profileDir?: string; unlimited?: boolean; qpm?: number; output?: string },
): Promise<RunResult> {
  // A fresh emulator per run: empty rate windows and counters.
  const emulator = await spawnEmulator(options.emulator);
  runCounter += 1;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: context.redisUrl,
    EMBEDQ_REDIS_PREFIX: `bench${runCounter}`,
    DASHSCOPE_BASE_URL: emulator.url,
    // Overhead runs lift the gate too, or it would hold them at the quota.
    EMBEDQ_QPM: String(options.unlimited ? 1e9 : (options.qpm ?? QPM)),
    EMBEDQ_TPM: String(options.unlimited ? 1e12 : TPM),
    // As workers run by default: debug lines (one a batch) cost the workers ~10% more CPU at the quota.
    LOG_LEVEL: 'info',
  };
  delete env.DASHSCOPE_API_KEY;
  delete env.DASHSCOPE_REGION;
  const settings = loadSettings(env);
  const services = createServices(settings, createLogger({ level: 'silent' }));
  const monitor = new Redis(context.redisUrl);
  const workers: WorkerProcess[] = [];
  try {
    const nodeOptions = options.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`] : [];
    for (let index = 0; index < options.workers; index += 1) workers.push(spawnWorker(env, CONCURRENCY, nodeOptions));
    await sleep(1_500); // let the workers connect before the clock starts
    const usedMemory = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await monitor.info('memory'))![1]);
    const baselineRedisBytes = await usedMemory();
    const cpuAtStart = workers.map((worker) => cpuSeconds(worker.child.pid!));
    const threadsAtStart = workers.map((worker) => threadCpuSeconds(worker.child.pid!));
    const redisAtStart = await redisLoad(monitor);
    const output = options.output ?? path.join(context.folder, `out-${runCounter}`);
    const started = performance.now();
    const startedWall = Date.now();
    const id = await submitCorpusJob(
      { corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: services.s3 },
      parseJobOptions({ input: options.corpus, output, ...options.job }),
    );
    let peakRedisBytes = baselineRedisBytes;
    let peakWorkerRssBytes = 0;
    for (;;) {
      peakRedisBytes = Math.max(peakRedisBytes, await usedMemory());
      for (const worker of workers) peakWorkerRssBytes = Math.max(peakWorkerRssBytes, rssBytes(worker.child.pid!));
      const record = await services.corpora.get(id);
      if (record?.state === 'completed') break;
      if (record?.state === 'failed' || record?.state === 'cancelled') throw new Error(`bench job ${record.state}: ${record.error}`);
      await sleep(50);
    }
    const seconds = (performance.now() - started) / 1000;
    const redisAtEnd = await redisLoad(monitor);
    const workerCpuSeconds = workers.reduce((sum, worker, index) => sum + cpuSeconds(worker.child.pid!) - cpuAtStart[index]!, 0);
    const byThread = { main: 0, shardThread: 0, other: 0 };
    workers.forEach((worker, index) => {
      const pid = worker.child.pid!;
      const shardTid = worker.memory.findLast((line) => line.shardThreadOsId !== undefined)?.shardThreadOsId;
      for (const [tid, seconds] of threadCpuSeconds(pid)) {
        const used = seconds - (threadsAtStart[index]!.get(tid) ?? 0);
        byThread[tid === pid ? 'main' : tid === shardTid ? 'shardThread' : 'other'] += (used * 1e6) / options.lines;
      }
    });
    const stats = await emulator.stats();
    // Steady state: from the end of the ramp-up (the first second at 90% of the limit; at least 3 s:
    // the split, and the gate's slow start when nothing is learned) to 3 s before the end (the tail
    // of the last shard). The ramp's length is reported on its own.
    const perSecondLimit = (options.qpm ?? QPM) / 60;
    const reached = stats.history.findIndex((second) => second.accepted >= perSecondLimit * 0.9);
    const rampSeconds = options.unlimited || reached < 3 ? 3 : reached;
    const steady = stats.history.slice(rampSeconds, -3);
    const mean = (pick: (second: (typeof steady)[number]) => number): number =>
      steady.length ? steady.reduce((sum, second) => sum + pick(second), 0) / steady.length : NaN;
    // Stopped, the workers flush their last metrics: request latency from their own histogram.
    await Promise.all(workers.map((worker) => worker.stop()));
    const latency = await requestLatencyHistogram(monitor, settings.redisPrefix);
    const throttled = stats.byStatus['429'] ?? 0;
    return {
      lines: options.lines,
      seconds,
      linesPerSecond: options.lines / seconds,
      requests: stats.requests,
      accepted: stats.accepted,
      throttled,
      throttledShare: throttled / Math.max(1, stats.requests),
      rampSeconds,
      steadyRequestsPerMinute: mean((second) => second.accepted) * 60,
      steadyTokensPerMinute: mean((second) => second.tokens) * 60,
      maxRequestsPerSecond: stats.maxRequestsPerSecond,
      latencyP50Ms: histogramQuantile(latency, 0.5) * 1000,
      latencyP99Ms: histogramQuantile(latency, 0.99) * 1000,
      workerCpuSeconds,
      workerCpuMicrosPerLine: (workerCpuSeconds * 1e6) / options.lines,
      workerCpuMicrosPerLineByThread: byThread,
      peakRedisBytes,
      baselineRedisBytes,
      peakWorkerRssBytes,
      memoryBreakdown: Object.fromEntries(
        MEMORY_FIELDS.map((field) => [field, Math.max(0, ...workers.flatMap((worker) => worker.memory.map((line) => line[field] ?? 0)))]),
      ),
      acceptedPerSecond: stats.history.map((second) => second.accepted),
      throttledPerSecond: stats.history.map((second) => second.rateLimited),
      cuts: workers
        .flatMap((worker) => worker.cuts)
        .map((cut): [number, number, string] => [Math.round((cut.time - startedWall) / 100) / 10, cut.learnedPerMinute, cut.action])
        .sort((a, b) => a[0] - b[0]),
      redisCommandsPerLine: (redisAtEnd.commands - redisAtStart.commands) / options.lines,
      redisCpuMicrosPerLine: ((redisAtEnd.cpuSeconds - redisAtStart.cpuSeconds) * 1e6) / options.lines,
      redisCpuShare: (redisAtEnd.cpuSeconds - redisAtStart.cpuSeconds) / seconds,
    };
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    monitor.disconnect();
    await services.close();
    await emulator.stop();
  }
}

/** What a data engineer would write instead: openai-node on the compatible endpoint, p-limit, backoff on 429. */
async function runHandRolled(lines: string[], concurrency: number) {
  const emulator = await spawnEmulator(QUOTA_EMULATOR);
  const client = new OpenAI({ apiKey: 'sk-bench', baseURL: `${emulator.url}/compatible-mode/v1`, maxRetries: 0, timeout: 60_000 });
  const limit = pLimit(concurrency);
  const latencies: number[] = [];
  let embedded = 0;
  let retries = 0;
  const batches: string[][] = [];
  for (let index = 0; index < lines.length; index += 10) batches.push(lines.slice(index, index + 10));
  const started = performance.now();
  await Promise.all(
    batches.map((batch) =>
      limit(async () => {
        for (let attempt = 0; ; attempt += 1) {
          const sent = performance.now();
          try {
            const response = await client.embeddings.create({ model: 'text-embedding-v4', input: batch, dimensions: 1024, encoding_format: 'float' });
            latencies.push(performance.now() - sent);
            embedded += response.data.length;
            return;
          } catch (error) {
            if (!(error instanceof OpenAI.APIError) || error.status !== 429) throw error;
            retries += 1;
            // Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... capped at 30 s.
            const ceiling = Math.min(30_000, 500 * 2 ** attempt);
            await sleep(ceiling / 2 + (Math.random() * ceiling) / 2);
          }
        }
      }),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  const stats = await emulator.stats();
  await emulator.stop();
  const throttled = stats.byStatus['429'] ?? 0;
  return {
    lines: embedded,
    seconds,
    linesPerSecond: embedded / seconds,
    requests: stats.requests,
    throttled,
    throttledShare: throttled / Math.max(1, stats.requests),
    retries,
    maxRequestsPerSecond: stats.maxRequestsPerSecond,
    latencyP50Ms: percentile(latencies, 50),
    latencyP99Ms: percentile(latencies, 99),
  };
}

/** The floor: CPU of a bare JSON.parse of the same 10-line native responses, and of our decoder. */
function parseFloor(lines: string[]) {
  const texts = lines.slice(0, 10);
  const parameters = { model: 'text-embedding-v4', dimension: 1024, outputType: 'dense&sparse', textType: 'document' } as const;
  const items = texts.map((text, index) => ({ index, ...emulatorEmbedding(text, parameters) }));
  const bytes = nativeSuccessBody(items, 1234, 'bench-request');
  const body = Buffer.from(bytes).toString('utf8');
  const rounds = 300;
  const time = (work: () => void): number => {
    for (let index = 0; index < 20; index += 1) work(); // warm up
    const started = process.cpuUsage();
    for (let index = 0; index < rounds; index += 1) work();
    const used = process.cpuUsage(started);
    return (used.user + used.system) / (rounds * texts.length);
  };
  return {
    responseBytes: Buffer.byteLength(body),
    jsonParseMicrosPerLine: time(() => JSON.parse(body)),
    // Bytes, as the client hands them to the decoder (a string would take the JSON.parse path).
    decodeMicrosPerLine: time(() => decodeNativeResponse(bytes, { count: texts.length, maxTotalTokens: Number.MAX_SAFE_INTEGER, dimension: 1024, dense: true, sparse: true })),
  };
}

/** Accepted/429s per second (`97/2`; a bare number had no 429) and the gate's cuts, to read a run by. */
function printTrace(result: RunResult): void {
  const seconds = result.acceptedPerSecond.map((accepted, index) => (result.throttledPerSecond[index] ? `${accepted}/${result.throttledPerSecond[index]}` : `${accepted}`));
  console.log(`  per second: ${seconds.join(' ')}`);
  console.log(`  cuts and nudges: ${result.cuts.length ? result.cuts.map(([second, learned, action]) => `${second} s ${action === 'nudge' ? 'nudged to' : 'cut to'} ${learned}/min`).join(', ') : 'none'}`);
}

const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MB`;
const fixed = (value: number, digits = 1): string => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');
/** Worker CPU per line, then by thread: main, shard thread, the rest. */
const cpuText = (run: RunResult): string =>
  `${fixed(run.workerCpuMicrosPerLine, 0)} µs (${fixed(run.workerCpuMicrosPerLineByThread.main, 0)}, ${fixed(run.workerCpuMicrosPerLineByThread.shardThread, 0)}, ${fixed(run.workerCpuMicrosPerLineByThread.other, 0)})`;

async function main(): Promise<void> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'embedq-bench-'));
  const redis = await startPrivateRedis();
  const context: BenchContext = { redisUrl: redis.url, folder };
  try {
    const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${mb(os.totalmem())} RAM, Node ${process.version}, ${os.platform()}`;
    console.log(`embedq bench${QUICK ? ' (quick)' : ''} on ${machine}`);

    const quotaCorpus = await benchCorpus(folder, QUOTA_LINES);
    const quotaLines = readFileSync(quotaCorpus, 'utf8').trimEnd().split('\n');

    const wideLines = QUICK ? 10_000 : 30_000;
    const runUnlimited = (options: Parameters<RunJob>[0]) => runEmbedq(context, { ...options, emulator: OVERHEAD_EMULATOR, unlimited: true });
    const reindex = () =>
      reindexScenario(
        folder,
        QUICK ? 20_000 : 200_000,
        wideLines,
        WORKERS,
        `${QPM} QPM / ${TPM} TPM`,
        (options) => runEmbedq(context, { ...options, emulator: QUOTA_EMULATOR }),
        runUnlimited,
      );
    if (ONLY === 'reindex') {
      if (SCENARIO === 'wide') await wideReindex(folder, wideLines, WORKERS, runUnlimited);
      else await reindex();
      return;
    }
    const smallObjects = async (): Promise<SmallObjectsFigures> => {
      console.log(`\n9. many small objects: ${SMALL_OBJECTS} one-to-three-line files, each open ${SMALL_OBJECT_GET_MS} ms late (an S3 GET), read as the split reads them`);
      const figures = await smallObjectsScenario(folder, SMALL_OBJECTS, SMALL_OBJECT_GET_MS);
      console.log(figures);
      return figures;
    };
    if (ONLY === 'objects') {
      const figures = await smallObjects();
      console.log(`\n${smallObjectsRows(figures).join('\n')}`);
      return;
    }
    if (ONLY === 'overhead') {
      await overheadScenarios(context, quotaLines);
      return;
    }
    if (ONLY === 'adaptive') {
      const table = adaptiveTable(await adaptiveScenarios(context.redisUrl, folder, QUICK, SCENARIO === 'wide' ? undefined : SCENARIO));
      console.log(`\n${table}`);
      // The adaptive scenarios alone (all of them), or the shared account's frontier: their own
      // results file beside latest.md.
      if (SCENARIO === undefined || SCENARIO === 'frontier') {
        const resultsFolder = path.resolve(import.meta.dirname, 'results');
        const [file, command] = SCENARIO === 'frontier' ? ['frontier.md', '--only adaptive --scenario frontier'] : ['adaptive.md', '--only adaptive'];
        await mkdir(resultsFolder, { recursive: true });
        await writeFile(path.join(resultsFolder, file), `Measured ${new Date().toISOString()} on ${machine} with \`npm run bench -- ${command}\`.\n\n${table}\n`);
      }
      return;
    }
    console.log(`\n1. quota-bound: ${QUOTA_LINES} lines, ${WORKERS} workers × ${CONCURRENCY}, emulator ${QPM} QPM / ${TPM} TPM, latency ${JSON.stringify(REALISTIC_LATENCY)} ms`);
    const quota = await runEmbedq(context, { corpus: quotaCorpus, lines: QUOTA_LINES, workers: WORKERS, job: {}, emulator: QUOTA_EMULATOR });
    console.log(quota);
    printTrace(quota);
    // The same at dimension 256 dense: small responses, so the emulator's JSON work competes less
    // with the workers on two cores and the gate's own precision is what is measured.
    console.log(`\n1b. quota-bound at dimension 256 dense (the gate's precision apart from CPU contention)`);
    const quota256 = await runEmbedq(context, { corpus: quotaCorpus, lines: QUOTA_LINES, workers: WORKERS, job: { dimension: 256, outputType: 'dense' }, emulator: QUOTA_EMULATOR });
    console.log(quota256);
    printTrace(quota256);
    if (ONLY === 'quota') return;
    const adaptive = await adaptiveScenarios(context.redisUrl, folder, QUICK);

    console.log(`\n2. side by side (OpenAI-compatible endpoint, dense, same corpus and limits)`);
    const embedqCompat = await runEmbedq(context, {
      corpus: quotaCorpus,
      lines: QUOTA_LINES,
      workers: WORKERS,
      job: { api: 'openai', outputType: 'dense' },
      emulator: QUOTA_EMULATOR,
    });
    console.log({ embedq: embedqCompat });
    const handRolled = await runHandRolled(quotaLines, WORKERS * CONCURRENCY);
    console.log({ handRolled });

    const { small, large, wide, floor, profile, client } = await overheadScenarios(context, quotaLines);
    const objects = await smallObjects();

    const results = {
      date: new Date().toISOString(),
      machine,
      command: `npm run bench${QUICK ? ' -- --quick' : ''}`,
      quotaBound: { ...quota, qpmShare: quota.steadyRequestsPerMinute / QPM, tpmShare: quota.steadyTokensPerMinute / TPM },
      quotaBound256: { ...quota256, qpmShare: quota256.steadyRequestsPerMinute / QPM },
      adaptive,
      sideBySide: {
        embedq: embedqCompat,
        handRolled,
        throughputRatio: embedqCompat.linesPerSecond / handRolled.linesPerSecond,
        throttledRatio: embedqCompat.throttled / Math.max(1, handRolled.throttled),
      },
      overheadBound: { ...large, floor, cpuToFloorRatio: large.workerCpuMicrosPerLine / floor.jsonParseMicrosPerLine, profile, client },
      scale: {
        small,
        large,
        wide,
        redisGrowth: (large.peakRedisBytes - large.baselineRedisBytes) / Math.max(1, small.peakRedisBytes - small.baselineRedisBytes),
        rssGrowth: large.peakWorkerRssBytes / small.peakWorkerRssBytes,
      },
      smallObjects: objects,
    };
    const table = `${markdown(results)}\n\n${adaptiveTable(adaptive)}`;
    console.log(`\n${table}`);
    const resultsFolder = path.resolve(import.meta.dirname, 'results');
    await mkdir(resultsFolder, { recursive: true });
    await writeFile(path.join(resultsFolder, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    await writeFile(path.join(resultsFolder, 'latest.md'), `${table}\n`);
    await reindex();
  } finally {
    await redis.stop();
    if (process.argv.includes('--keep')) console.log(`kept ${folder}`);
    else await rm(folder, { recursive: true, force: true });
  }
}


/** Scenarios 3 and 4: no limits, no latency, one worker; the 1× and 10× corpora, then a profiled 1× run. */
async function overheadScenarios(context: BenchContext, sampleLines: string[]) {
  const { folder } = context;
  console.log(`\n3/4. overhead-bound and scale: no limits, no latency, 1 worker × ${CONCURRENCY}, --shard-rows ${SCALE_SHARD_ROWS}`);
  const smallCorpus = await benchCorpus(folder, SCALE_LINES);
  const largeCorpus = await benchCorpus(folder, SCALE_LINES * 10);
  const scaleJob = { shardRows: SCALE_SHARD_ROWS };
  const unlimited = true;
  const emulator = OVERHEAD_EMULATOR;
  const small = await runEmbedq(context, { corpus: smallCorpus, lines: SCALE_LINES, workers: 1, job: scaleJob, unlimited, emulator });
  const large = await runEmbedq(context, { corpus: largeCorpus, lines: SCALE_LINES * 10, workers: 1, job: scaleJob, unlimited, emulator });
  // The memory bound holds whatever the dimension: the widest v4 vectors, twice the default.
  const wide = await runEmbedq(context, { corpus: largeCorpus, lines: SCALE_LINES * 10, workers: 1, job: { ...scaleJob, dimension: WIDEST_DIMENSION }, unlimited, emulator });
  console.log({ small, large, wide });
  const profileDir = path.join(folder, 'profile');
  await mkdir(profileDir, { recursive: true });
  await runEmbedq(context, { corpus: smallCorpus, lines: SCALE_LINES, workers: 1, job: scaleJob, profileDir, unlimited, emulator });
  const profile = summarizeProfile(profileDir);
  const floor = parseFloor(sampleLines);
  const client = await measureClientCost(emulator, smallCorpus, CLIENT_COST_LINES);
  console.log(JSON.stringify({ floor, profile, client }, null, 1));
  return { small, large, wide, floor, profile, client };

}

function adaptiveTable(results: AdaptiveFigures[]): string {
  return [
    `Adaptive quota (emulator 1,200 QPM, latency 150/220/400 ms, 2 workers × ${CONCURRENCY}, dimension 256 dense):`,
    '',
    '| scenario | utilisation of the real quota (after 5 s) | 429 share | seconds to converge | other |',
    '|---|---|---|---|---|',
    ...adaptiveRows(results),
  ].join('\n');
}

function markdown(r: {
  date: string;
  machine: string;
  command: string;
  quotaBound: RunResult & { qpmShare: number; tpmShare: number };
  quotaBound256: RunResult & { qpmShare: number };
  sideBySide: { embedq: RunResult; handRolled: Awaited<ReturnType<typeof runHandRolled>>; throughputRatio: number; throttledRatio: number };
  overheadBound: RunResult & {
    floor: ReturnType<typeof parseFloor>;
    cpuToFloorRatio: number;
    profile: ReturnType<typeof summarizeProfile>;
    client: Awaited<ReturnType<typeof measureClientCost>>;
  };
  scale: { small: RunResult; large: RunResult; wide: RunResult; redisGrowth: number; rssGrowth: number };
  smallObjects: SmallObjectsFigures;
}): string {
  const q = r.quotaBound;
  const s = r.sideBySide;
  const o = r.overheadBound;
  const rows = [
    `Measured ${r.date} on ${r.machine} with \`${r.command}\`.`,
    '',
    '| scenario | figure | value |',
    '|---|---|---|',
    `| 1. quota-bound (native, dense&sparse, ${q.lines} lines) | steady QPM / limit (after a ${q.rampSeconds} s ramp) | ${fixed(q.steadyRequestsPerMinute, 0)} / ${QPM} = ${fixed(q.qpmShare * 100)}% |`,
    `| | steady TPM / limit | ${fixed(q.steadyTokensPerMinute, 0)} / ${TPM} = ${fixed(q.tpmShare * 100, 2)}% |`,
    `| | 429s / requests | ${q.throttled} / ${q.requests} = ${fixed(q.throttledShare * 100, 2)}% |`,
    `| | lines/s (end to end) | ${fixed(q.linesPerSecond, 0)} |`,
    `| | request latency p50 / p99 (the workers' \`embedq_request_duration_seconds\` histogram, interpolated within its buckets) | ${fixed(q.latencyP50Ms, 0)} / ${fixed(q.latencyP99Ms, 0)} ms |`,
    `| | max requests in any 1 s | ${q.maxRequestsPerSecond} (limit ${QPM / 60}) |`,
    `| | Redis per line: commands (inside scripts too), CPU | ${fixed(q.redisCommandsPerLine, 2)}, ${fixed(q.redisCpuMicrosPerLine, 1)} µs |`,
    `| | Redis CPU at this rate | ${fixed(q.redisCpuShare * 100)}% of one core |`,
    `| | worker CPU per line (both workers; by thread) / scenario 3's floor | ${cpuText(q)}, ${fixed(q.workerCpuMicrosPerLine / o.floor.jsonParseMicrosPerLine, 2)}× |`,
    `| 1b. the same at dimension 256 dense | steady QPM / limit (after a ${r.quotaBound256.rampSeconds} s ramp) | ${fixed(r.quotaBound256.steadyRequestsPerMinute, 0)} / ${QPM} = ${fixed(r.quotaBound256.qpmShare * 100)}% |`,
    `| | 429s / requests | ${r.quotaBound256.throttled} / ${r.quotaBound256.requests} = ${fixed(r.quotaBound256.throttledShare * 100, 2)}% |`,
    `| | worker CPU per line (by thread) | ${cpuText(r.quotaBound256)} |`,
    `| 2. side by side (compatible API, dense) | embedq lines/s, 429s | ${fixed(s.embedq.linesPerSecond, 0)}, ${s.embedq.throttled} of ${s.embedq.requests} requests |`,
    `| | hand-rolled openai + p-limit(${WORKERS * CONCURRENCY}) lines/s, 429s | ${fixed(s.handRolled.linesPerSecond, 0)}, ${s.handRolled.throttled} of ${s.handRolled.requests} requests |`,
    `| | throughput ratio, 429 ratio (embedq / hand-rolled) | ${fixed(s.throughputRatio, 2)}×, ${fixed(s.throttledRatio, 4)} |`,
    `| 3. overhead-bound (no limits, 1 worker, ${o.lines} lines) | lines/s per worker | ${fixed(o.linesPerSecond, 0)} |`,
    `| | worker CPU per line | ${fixed(o.workerCpuMicrosPerLine, 0)} µs |`,
    `| | of which main thread, shard thread, other threads (V8 GC and compiler, libuv) | ${fixed(o.workerCpuMicrosPerLineByThread.main, 0)}, ${fixed(o.workerCpuMicrosPerLineByThread.shardThread, 0)}, ${fixed(o.workerCpuMicrosPerLineByThread.other, 0)} µs |`,
    `| | floor: bare JSON.parse per line (${(o.floor.responseBytes / 1024).toFixed(0)} KB / 10 lines) | ${fixed(o.floor.jsonParseMicrosPerLine, 0)} µs (our decode: ${fixed(o.floor.decodeMicrosPerLine, 0)} µs) |`,
    `| | worker CPU / floor | ${fixed(o.cpuToFloorRatio, 2)}× |`,
    `| | the DashScope client alone (HTTP + decode, no pipeline; ${CLIENT_COST_LINES} lines), CPU per line / floor | ${fixed(o.client.cpuMicrosPerLine, 0)} µs, ${fixed(o.client.cpuMicrosPerLine / o.floor.jsonParseMicrosPerLine, 2)}× |`,
    `| | profile (self time) | ${o.profile.categories.slice(0, 6).map((entry) => `${entry.category} ${fixed(entry.share * 100, 0)}%`).join(', ')} |`,
    `| 4. scale (${r.scale.small.lines} vs ${r.scale.large.lines} lines) | peak Redis used_memory above baseline | ${mb(r.scale.small.peakRedisBytes - r.scale.small.baselineRedisBytes)} vs ${mb(r.scale.large.peakRedisBytes - r.scale.large.baselineRedisBytes)} (${fixed(r.scale.redisGrowth, 2)}×) |`,
    `| | peak worker RSS | ${mb(r.scale.small.peakWorkerRssBytes)} vs ${mb(r.scale.large.peakWorkerRssBytes)} (${fixed(r.scale.rssGrowth, 2)}×) |`,
    `| | its largest parts, 10× run (MB) | ${memoryText(r.scale.large.memoryBreakdown)} |`,
    `| | the 10× run at dimension ${WIDEST_DIMENSION}: peak worker RSS, worker CPU per line | ${mb(r.scale.wide.peakWorkerRssBytes)}, ${fixed(r.scale.wide.workerCpuMicrosPerLine, 0)} µs |`,
    `| | its largest parts (MB) | ${memoryText(r.scale.wide.memoryBreakdown)} |`,
    ...smallObjectsRows(r.smallObjects).slice(2),
  ];
  return rows.join('\n');
}

/** Scenario 9's rows, under the table's header. */
function smallObjectsRows(f: SmallObjectsFigures): string[] {
  const rate = (seconds: number): string => `${fixed(f.objects / seconds, 0)} objects/s`;
  return [
    '| scenario | figure | value |',
    '|---|---|---|',
    `| 9. many small objects (${f.objects} files, ${f.lines} lines, ${f.getLatencyMs} ms a GET) | read one after another (before read-ahead) | ${fixed(f.serialSeconds, 2)} s, ${rate(f.serialSeconds)} |`,
    `| | read ahead | ${fixed(f.readAheadSeconds, 2)} s, ${rate(f.readAheadSeconds)} (${fixed(f.serialSeconds / f.readAheadSeconds, 1)}× faster) |`,
  ];
}

await main();
