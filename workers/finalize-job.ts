import { text } from 'node:stream/consumers';

import type { FinalizeJobPayload } from '../jobs/payloads.js';
import { buildManifest } from '../src/output/manifest.js';
import { ERRORS_FILE, MANIFEST_FILE, SUCCESS_FILE } from '../src/output/layout.js';
import { openOutput } from './output.js';
import type { JobContext } from './run-job.js';

/**
 * Last step: `_errors.jsonl` (every shard's error records, in row order), `_manifest.json`, then
 * `_SUCCESS`, written last and only when every shard is in place. Scratch files go after that.
 */
export async function finalizeJob(payload: FinalizeJobPayload, { services, logger }: JobContext): Promise<void> {
  const { corpora } = services;
  const id = payload.corpusJobId;
  const record = await corpora.get(id);
  if (!record || record.state !== 'running') return;
  const shards = await corpora.shardStats(id);
  if (record.totalShards === null || shards.length !== record.totalShards) {
    throw new Error(`finalize found ${shards.length} of ${record.totalShards ?? '?'} shards written`);
  }
  const output = openOutput(record.options.output, services);

  const errorParts: string[] = [];
  for (const shard of shards) {
    if (shard.errorsKey) errorParts.push(await text(await output.store.read(output.prefix + shard.errorsKey)));
  }
  await output.store.write(output.prefix + ERRORS_FILE, errorParts.join(''));

  const counts = {
    lines: record.totalLines ?? 0,
    embedded: record.rowsEmbedded,
    skipped_blank: record.rowsBlank,
    failed: record.rowsFailed,
    truncated: record.rowsTruncated,
  };
  if (counts.embedded + counts.skipped_blank + counts.failed !== counts.lines) {
    // Invariant 1 is broken somewhere; refuse to vouch for the output.
    throw new Error(`counts do not add up: ${JSON.stringify(counts)}`);
  }
  const manifest = buildManifest({
    jobId: id,
    options: record.options,
    counts,
    tokens: record.tokens,
    shards: shards.map((shard) => ({ file: shard.file, first_row: shard.firstRow, last_row: shard.lastRow, rows: shard.rows, bytes: shard.bytes })),
    errorsFile: ERRORS_FILE,
    startedAt: new Date(record.startedAt ?? record.createdAt),
    finishedAt: new Date(),
  });
  await output.store.write(output.prefix + MANIFEST_FILE, `${JSON.stringify(manifest, null, 2)}\n`);
  await output.store.write(output.prefix + SUCCESS_FILE, '');
  await corpora.markCompleted(id);
  for (const shard of shards) {
    if (shard.errorsKey) await output.store.delete(output.prefix + shard.errorsKey);
  }
  await corpora.dropShardStats(id);
  logger.info({ ...counts, tokens: record.tokens, shards: shards.length }, 'corpus job completed');
}
