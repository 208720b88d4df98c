import { join } from 'node:path';

import { submitCorpusJob } from '../../jobs/enqueue.js';
import { QUEUES } from '../../jobs/queues.js';
import { loadSettings } from '../../src/config.js';
import { DEMO_QUERIES, writeSampleCorpus } from '../../src/demo/sample-corpus.js';
import { startEmulator } from '../../src/emulator/server.js';
import { formatCount } from '../../src/format-count.js';
import { embeddingParameters, parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { MANIFEST_FILE } from '../../src/output/layout.js';
import type { Manifest } from '../../src/output/manifest.js';
import { type PrivateRedis, startPrivateRedis } from '../../src/redis/private-redis.js';
import { nearestNeighbours, type Neighbour } from '../../src/shards/nearest-neighbours.js';
import { sleep } from '../../src/sleep.js';
import { LocalObjectStore } from '../../src/storage/local-store.js';
import { createServices } from '../services.js';
import { startWorkers } from '../start-workers.js';
import { DEMO_REDIS_FOLDER, ensureRedisServer, prepareDemoFolder } from './demo-setup.js';
import { watchJob } from './watch.js';

/** How long a signal's clean-up may take before the private Redis is killed and the demo exits anyway. */
const STOP_GRACE_MS = 5_000;

/**
 * Everything started here is stopped here, in reverse order, whatever happens: the end of the run,
 * an error, SIGINT, SIGTERM or SIGHUP, or a reader that went away (`embedq demo | head`: EPIPE).
 * Without that, a demo killed mid-run left its private redis-server running.
 */
export async function runDemo(folder: string, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const stops: Array<() => Promise<void>> = [];
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> =>
    (stopping ??= (async () => {
      for (const stop of stops.reverse()) await stop().catch(() => undefined);
    })());
  /** The private Redis, once asked for: an interruption while it starts must still stop it. */
  let redisStarting: Promise<PrivateRedis> | undefined;
  /** Set once interrupted: stops what was started (within STOP_GRACE_MS) and exits with its code. */
  let exiting: Promise<never> | undefined;
  let interrupted = false;
  const interruptedWith = (code: number) => (): void => {
    if (interrupted) return;
    interrupted = true;
    exiting = Promise.race([stopAll(), sleep(STOP_GRACE_MS)])
      .then(async () => (await redisStarting?.catch(() => undefined))?.kill())
      .finally(() => process.exit(code)) as Promise<never>;
  };
  const exits: Array<[NodeJS.Signals, () => void]> = [
    ['SIGINT', interruptedWith(130)],
    ['SIGTERM', interruptedWith(143)],
    ['SIGHUP', interruptedWith(129)],
  ];
  for (const [signal, handler] of exits) process.once(signal, handler);
  const closedReader = (error: NodeJS.ErrnoException): void => {
    if (error.code === 'EPIPE') interruptedWith(141)();
  };
  out.on('error', closedReader);
  const say = (line = ''): boolean => out.write(`${line}\n`);
  try {
    const corpusFolder = join(folder, 'corpus');
    const outputFolder = join(folder, 'output');
    await prepareDemoFolder(folder);
    const corpus = await writeSampleCorpus(corpusFolder);
    say(`embedq demo — sample corpus: ${formatCount(corpus.lines)} lines in ${corpus.files.length} files under ${corpusFolder}`);

    await ensureRedisServer(say);
    redisStarting = startPrivateRedis({ ownProcessGroup: true, dir: join(folder, DEMO_REDIS_FOLDER) });
    const redis = await redisStarting;
    stops.push(() => redis.stop());
    const useEmulator = !process.env.DASHSCOPE_API_KEY;
    const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redis.url, EMBEDQ_STALLED_INTERVAL_MS: '5000' };
    if (useEmulator) {
      // Realistic latency so the demo shows the rate gate and concurrency at work.
      const emulator = await startEmulator({ port: 0, tokenCounting: 'estimate', faults: { latencyMs: { min: 30, median: 80, p99: 300 } } });
      stops.push(() => emulator.close());
      env.DASHSCOPE_BASE_URL = emulator.url;
      delete env.DASHSCOPE_REGION;
      say(`private Redis ${redis.url} · DashScope emulator ${emulator.url} (set DASHSCOPE_API_KEY to use the real service)`);
    } else {
      say(`private Redis ${redis.url} · real DashScope (DASHSCOPE_API_KEY is set)`);
    }
    const settings = loadSettings(env, { requireApiKey: true });
    const logger = createLogger({ level: process.env.LOG_LEVEL ? settings.log.level : 'warn' }, process.stderr);
    const services = createServices(settings, logger);
    stops.push(() => services.close());
    const pool = startWorkers(services, { concurrency: 32 });
    // Interrupted, the job is given up with the private Redis: no waiting for its running steps.
    stops.push(() => pool.close({ force: interrupted }));

    const options = parseJobOptions({ input: corpusFolder, output: outputFolder, textField: 'text', idField: 'id', shardRows: 1000 });
    const started = performance.now();
    const id = await submitCorpusJob({ corpora: services.corpora, splitQueue: services.queues[QUEUES.split], s3: services.s3 }, options);
    say(`submitted ${id}: ${options.model}, ${options.dimension} dims, ${options.outputType}`);
    const record = await watchJob(services, id, process.stderr);
    const seconds = (performance.now() - started) / 1000;
    if (record.state !== 'completed') throw new Error(`demo job ${record.state}: ${record.errorCode}: ${record.error}`);

    const store = new LocalObjectStore(outputFolder);
    const manifest = JSON.parse((await readAll(store, MANIFEST_FILE)).toString('utf8')) as Manifest;
    const c = manifest.counts;
    say();
    say(`rows       ${formatCount(c.embedded)} embedded · ${c.skipped_blank} blank skipped · ${c.failed} failed · ${formatCount(c.lines)} lines`);
    say(`tokens     ${formatCount(manifest.tokens)} · estimated cost $${manifest.estimated_cost_usd.toFixed(4)}`);
    say(`throughput ${formatCount(c.lines / seconds)} lines/s (${seconds.toFixed(1)} s end to end)`);
    say(`files      ${outputFolder}/ — ${manifest.shards.length} shards (${manifest.shards.map((s) => s.file).join(', ')}), ${MANIFEST_FILE}, _errors.jsonl, _SUCCESS`);

    const parameters = { ...embeddingParameters(options), textType: 'query' as const, outputType: 'dense' as const };
    const shards = await Promise.all(manifest.shards.map(async (shard) => readAll(store, shard.file)));
    for (const query of DEMO_QUERIES) {
      const [vector] = (await services.embeddings.embed([query], parameters)).items;
      const neighbours = nearestNeighbours(shards, options.outputFormat, vector!.dense!, 3);
      say();
      say(`query: ${query}`);
      for (const neighbour of neighbours) say(formatNeighbour(neighbour));
    }
  } finally {
    await stopAll();
    // Interrupted, the run's own error (a closed connection) is not the news: the exit code is.
    if (exiting) await exiting;
    for (const [signal, handler] of exits) process.off(signal, handler);
    out.off('error', closedReader);
  }
}

function formatNeighbour(neighbour: Neighbour): string {
  const text = neighbour.text.length > 90 ? `${neighbour.text.slice(0, 89)}…` : neighbour.text;
  return `  ${neighbour.score.toFixed(3)}  row ${neighbour.row}  ${text}`;
}

async function readAll(store: LocalObjectStore, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.read(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
