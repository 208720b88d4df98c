import { enqueueFinalize } from '../jobs/enqueue.js';
import type { WriteShardPayload } from '../jobs/payloads.js';
import { shardErrorsFileName, shardFileName } from '../src/output/layout.js';
import { corpusOptions } from './corpus-options.js';
import { openOutput } from './output.js';
import type { JobContext } from './run-job.js';

/**
 * Writes one shard once all its batches are embedded: rows sorted by `row`, one Parquet or Arrow
 * file (visible only complete: a single PUT or a rename), the shard's error records to a scratch
 * file, then records the shard as written and frees its Redis buffer. The last shard queues
 * finalize. Running it twice writes the same bytes.
 */
export async function writeShard(payload: WriteShardPayload, { services, logger }: JobContext): Promise<void> {
  const { corpora, queues } = services;
  const id = payload.corpusJobId;
  const log = logger.child({ shard: payload.shard });
  if (await corpora.isShardWritten(id, payload.shard)) {
    log.debug('shard already written');
    return;
  }
  const state = await corpora.state(id);
  if (state !== 'running') return;
  const buffered = await corpora.readShard(id, payload.shard);
  if (!buffered) throw new Error(`shard ${payload.shard} of ${id} has no buffered data`);

  const options = await corpusOptions(corpora, id);
  const started = performance.now();
  const { bytes, rows } = await services.shardEncoder.encode(buffered.batches, { dimension: options.dimension, format: options.outputFormat });
  const output = openOutput(options.output, services);
  const file = shardFileName(payload.shard, options.outputFormat);
  await output.store.write(output.prefix + file, bytes);
  let errorsKey: string | null = null;
  if (buffered.errors.length > 0) {
    errorsKey = shardErrorsFileName(id, payload.shard);
    await output.store.write(output.prefix + errorsKey, buffered.errors.map((record) => `${JSON.stringify(record)}\n`).join(''));
  }
  const { shardsWritten, totalShards } = await corpora.markShardWritten(id, {
    shard: payload.shard,
    file,
    firstRow: buffered.firstRow,
    lastRow: buffered.lastRow,
    rows,
    bytes: bytes.byteLength,
    errors: buffered.errors.length,
    errorsKey,
    blank: buffered.blank,
    truncated: buffered.truncated,
    tokens: buffered.tokens,
    batches: buffered.batchCount,
  });
  services.metrics.shardWritten({ seconds: (performance.now() - started) / 1000, blank: buffered.blank, failed: buffered.errors.length });
  log.info({ file, rows, errors: buffered.errors.length, bytes: bytes.byteLength, durationMs: Math.round(performance.now() - started) }, 'shard written');
  if (totalShards !== null && shardsWritten === totalShards) await enqueueFinalize(queues.write, id, payload.generation);
}
