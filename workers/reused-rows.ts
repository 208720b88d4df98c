import { ReuseUnavailableError } from '../src/errors.js';
import { resolvePreviousOutput, type PreviousOutput } from '../src/reuse/previous-output.js';
import { decodeReuseList } from '../src/reuse/reuse-list.js';
import { encodeBatch } from '../src/shards/batch-codec.js';
import type { ShardRow } from '../src/shards/shard-row.js';
import { openOutput } from './output.js';
import type { Services } from './services.js';

/**
 * The shard writer's side of `--reuse`: the rows of a shard's reuse list, with their vectors copied
 * from the previous output the split matched them against, as one encoded batch. Each copied row's
 * `content_hash` must still be the line's content key: if the previous output was replaced or
 * changed since the split, the job fails clearly instead of writing someone else's vectors.
 */
export async function reusedRowsBatch(services: Services, corpusJobId: string, reuseList: Buffer, dimension: number): Promise<Buffer> {
  const previous = await previousOutputOf(services, corpusJobId);
  const lines = decodeReuseList(reuseList);
  // Loaded on first use: it brings Arrow and parquet-wasm (~35 MB) into the main thread, which
  // only `--reuse` runs need there.
  const { fetchPreviousVectors } = await import('../src/reuse/previous-vectors.js');
  const vectors = await fetchPreviousVectors(previous, lines);
  const rows = lines.map((line, i): ShardRow => {
    const found = vectors[i]!;
    const hash = line.hash.toString('hex');
    if (found.contentHash !== hash) {
      const file = previous.manifest.shards[line.shard]?.file ?? `shard ${line.shard}`;
      throw new ReuseUnavailableError(
        `${previous.location}: ${file} row ${line.rowInShard} no longer holds the text this job matched for row ${line.row} (${line.source}:${line.line + 1}); the previous output changed during the run. Retry the job without --reuse, or with an unchanged previous output`,
      );
    }
    return { row: line.row, source: line.source, line: line.line, id: line.id, text: found.text, dense: found.dense, sparse: found.sparse, contentHash: hash, ...(line.upsert ? { upsert: true } : {}) };
  });
  return encodeBatch(rows, dimension);
}

/** Per process, the previous output of a few recent jobs (its manifest only; one read per job, not per shard). */
const cache = new Map<string, Promise<PreviousOutput>>();
const MAX_ENTRIES = 8;

async function previousOutputOf(services: Services, corpusJobId: string): Promise<PreviousOutput> {
  let entry = cache.get(corpusJobId);
  if (!entry) {
    entry = (async () => {
      const record = await services.corpora.get(corpusJobId);
      const from = record?.reusedFrom;
      if (!from) throw new ReuseUnavailableError(`job ${corpusJobId} has reused lines but no recorded previous output`);
      const previous = await resolvePreviousOutput(from.location, (location) => openOutput(location, services));
      if (previous.manifest.job_id !== from.jobId) {
        throw new ReuseUnavailableError(`${from.location} now holds the output of job ${previous.manifest.job_id}, not of ${from.jobId} whose rows this job reuses`);
      }
      return previous;
    })();
    if (cache.size >= MAX_ENTRIES) cache.delete(cache.keys().next().value!);
    cache.set(corpusJobId, entry);
    // A failure (say a storage blip) is not kept: the next attempt reads again.
    entry.catch(() => cache.delete(corpusJobId));
  }
  return entry;
}
