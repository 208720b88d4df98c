import { ReuseUnavailableError } from '../src/errors.js';
import { resolvePreviousOutput, type PreviousOutput } from '../src/reuse/previous-output.js';
import { decodeReuseList } from '../src/reuse/reuse-list.js';
import type { FoundRow } from '../src/reuse/previous-vectors.js';
import type { ShardRow } from '../src/shards/shard-row.js';
import { openOutput } from './output.js';
import type { Services } from './services.js';

/** The reused rows of a shard, a previous row group at a time. */
export interface ReusedRows {
  /**
   * Whether the groups' rows ascend by `row` throughout (previous rows are read in file order,
   * which is row order unless lines moved between the runs): then they can be merged into the
   * embedded batches as a stream (src/shards/merge-rows.ts).
   */
  inRowOrder: boolean;
  groups: AsyncIterable<ShardRow[]>;
}

/**
 * The shard writer's side of `--reuse`: the rows of a shard's reuse list, with their vectors copied
 * from the previous output the split matched them against, a previous row group at a time. Each
 * copied row's `content_hash` must still be the line's content key: if the previous output was
 * replaced or changed since the split, the job fails clearly instead of writing someone else's
 * vectors.
 */
export async function reusedRows(services: Services, corpusJobId: string, reuseList: Buffer): Promise<ReusedRows> {
  const previous = await previousOutputOf(services, corpusJobId);
  const lines = decodeReuseList(reuseList);
  const readOrder = lines.map((_, i) => i).sort((a, b) => lines[a]!.shard - lines[b]!.shard || lines[a]!.rowInShard - lines[b]!.rowInShard);
  const inRowOrder = readOrder.every((line, i) => i === 0 || lines[readOrder[i - 1]!]!.row < lines[line]!.row);
  const rowOf = ({ ref, vectors }: FoundRow): ShardRow => {
    const line = lines[ref]!;
    const hash = line.hash.toString('hex');
    if (vectors.contentHash !== hash) {
      const file = previous.manifest.shards[line.shard]?.file ?? `shard ${line.shard}`;
      throw new ReuseUnavailableError(
        `${previous.location}: ${file} row ${line.rowInShard} no longer holds the text this job matched for row ${line.row} (${line.source}:${line.line + 1}); the previous output changed during the run. Retry the job without --reuse, or with an unchanged previous output`,
      );
    }
    return { row: line.row, source: line.source, line: line.line, id: line.id, text: vectors.text, dense: vectors.dense, sparse: vectors.sparse, contentHash: hash, ...(line.upsert ? { upsert: true } : {}) };
  };
  // Loaded on first use: it brings hyparquet and Arrow into the main thread, which only `--reuse`
  // runs need there.
  const { previousRows } = await import('../src/reuse/previous-vectors.js');
  async function* groups(): AsyncGenerator<ShardRow[]> {
    for await (const found of previousRows(previous, lines)) yield found.map(rowOf);
  }
  return { inRowOrder, groups: groups() };
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
