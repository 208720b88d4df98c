import { ReuseUnavailableError } from '../src/errors.js';
import { resolvePreviousOutput, type PreviousOutput } from '../src/reuse/previous-output.js';
import { PreviousShardCopies } from '../src/reuse/previous-shards.js';
import { openOutput } from './output.js';
import type { Services } from './services.js';

/**
 * The shard writer's side of `--reuse`: the previous output a job's reused lines come from, as
 * local copies of its shards made when the shard thread asks (src/reuse/previous-shards.ts). The
 * output must still be the one the split matched against.
 */
export async function previousShardsOf(services: Services, corpusJobId: string): Promise<PreviousShardCopies> {
  return new PreviousShardCopies(await previousOutputOf(services, corpusJobId));
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
