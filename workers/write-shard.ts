import { enqueueFinalize } from '../jobs/enqueue.js';
import { assertNoOtherJobsRun } from '../jobs/output-files.js';
import type { WriteShardPayload } from '../jobs/payloads.js';
import { shardErrorsFileName, shardFileName, upsertsFileName } from '../src/output/layout.js';
import { corpusOptions } from './corpus-options.js';
import { previousShardsOf } from './previous-shards-of.js';
import { openOutput } from './output.js';
import type { JobContext } from './run-job.js';
import { fencedChunks, stepFence } from './step-fence.js';
import { JobStoppedError } from './stop-watch.js';

/**
 * Writes one shard once all its batches are embedded: rows sorted by `row`, one Parquet or Arrow
 * file (visible only complete: an S3 upload completed only after its last part, or a temp file
 * renamed), the shard's error records to a scratch file, then records the shard as written and
 * frees its Redis buffer. The last shard queues finalize. Running it twice writes the same bytes.
 *
 * Fenced: nothing is written unless the job runs in this step's generation and the buffer holds
 * every batch the splitter queued (`done == expected`); the job's state is checked again just
 * before each file appears (stepFence), and the ledger checks both, atomically, when it records
 * the shard. A job stopped while its file uploads (cancel, failure) cuts the upload (the stop
 * watch's signal): a PUT held for minutes by a slow S3 landed after the next run had completed.
 */
export async function writeShard(payload: WriteShardPayload, { services, logger }: JobContext): Promise<void> {
  const { corpora, queues } = services;
  const id = payload.corpusJobId;
  const generation = payload.generation;
  const log = logger.child({ shard: payload.shard });
  if (await corpora.ledger.isWritten(id, payload.shard)) {
    log.debug('shard already written');
    return;
  }
  const now = await corpora.jobs.stateAndGeneration(id);
  if (now?.state !== 'running' || now.generation !== generation) {
    log.info({ state: now?.state, generation: now?.generation }, 'write skipped: job not running in this generation');
    return;
  }
  const buffered = await corpora.buffers.summary(id, payload.shard);
  if (!buffered || buffered.expected === undefined || buffered.done !== buffered.expected) {
    // Only an out-of-date step gets here (the last batch queues the writer); the current one comes.
    // Unless Redis lost the buffer: then none comes, and the job fails instead of waiting forever.
    await corpora.buffers.checkWhole(id, generation, payload.shard);
    log.warn({ done: buffered?.done, expected: buffered?.expected }, 'write skipped: shard buffer incomplete');
    return;
  }

  const options = await corpusOptions(corpora, id);
  const started = performance.now();
  // The batches stream from Redis a slice at a time into the encoder, and the file streams out of
  // it into the store: a shard is never held whole (README "Memory"). Their error records are
  // gathered as the slices are read.
  const errors = [...buffered.inputErrors];
  const embedded = corpora.buffers.batches(id, payload.shard, buffered.expected, errors, options.dimension);
  // Lines that take a previous row's vectors (`--reuse`): the thread copies their rows from the
  // previous output's shards, a local copy at a time (README "Memory").
  const previous = buffered.reuseList ? await previousShardsOf(services, id) : undefined;
  const output = openOutput(options.output, services);
  await assertNoOtherJobsRun(output, id, options.output);
  // Checked again just before each file appears: this step may have been paused past its lock.
  const fence = stepFence(corpora, id, generation);
  const file = shardFileName(payload.shard, options.outputFormat);
  const stop = services.stopWatch.watch(id, generation);
  const signal = stop.signal;
  let written;
  try {
    written = await writeFiles();
  } catch (error) {
    if (!(error instanceof JobStoppedError)) throw error;
    log.info('write abandoned: job stopped');
    return;
  } finally {
    stop.done();
  }
  const { bytes, rows, upsertsFile, errorsKey } = written;
  const result = await corpora.ledger.markWritten(id, generation, {
    shard: payload.shard,
    file,
    firstRow: buffered.firstRow,
    lastRow: buffered.lastRow,
    rows,
    bytes,
    errors: errors.length,
    errorsKey,
    blank: buffered.blank,
    truncated: buffered.truncated,
    tokens: buffered.tokens,
    batches: buffered.batchCount,
    ...buffered.reuse,
    ...(upsertsFile ? { upsertsFile } : {}),
  });
  if (result.status === 'refused') {
    // Stopped or retried while writing: the file is rewritten by the run that records the shard.
    log.info({ reason: result.reason }, 'shard not recorded');
    return;
  }
  services.metrics.shardWritten({ seconds: (performance.now() - started) / 1000, blank: buffered.blank, failed: errors.length });
  log.info({ file, rows, reused: buffered.reuse.reused, errors: errors.length, bytes, durationMs: Math.round(performance.now() - started) }, 'shard written');
  if (result.totalShards !== null && result.shardsWritten === result.totalShards) await enqueueFinalize(queues.write, id, generation);

  /** The shard's file, its upserts and its error records; each checked by the fence before it appears. */
  async function writeFiles(): Promise<{ bytes: number; rows: number; upsertsFile: string | undefined; errorsKey: string | null }> {
    const { bytes, rows, upserts } = await services.shardEncoder
      .encode(
        embedded,
        { dimension: options.dimension, format: options.outputFormat, reuse: previous && { list: buffered!.reuseList!, previous } },
        (chunks) => output.store.writeStream(output.prefix + file, fencedChunks(chunks, fence), { signal }),
      )
      .finally(() => previous?.dispose());
    const upsertsFile = upserts ? upsertsFileName(payload.shard) : undefined;
    if (upsertsFile) {
      await fence();
      await output.store.write(output.prefix + upsertsFile, upserts!, { signal });
    }
    errors.sort((a, b) => a.row - b.row);
    let errorsKey: string | null = null;
    if (errors.length > 0) {
      errorsKey = shardErrorsFileName(id, payload.shard);
      await fence();
      await output.store.write(output.prefix + errorsKey, errors.map((record) => `${JSON.stringify(record)}\n`).join(''), { signal });
    }
    return { bytes, rows, upsertsFile, errorsKey };
  }
}

