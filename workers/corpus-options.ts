import type { CorpusStore } from '../jobs/corpus-store.js';
import type { JobOptions } from '../src/job-options.js';

/**
 * A corpus job's options never change after submit, and every embed job needs them: cache them per
 * process instead of reading Redis ~100 times a second. Bounded, oldest dropped first.
 */
const cache = new Map<string, JobOptions>();
const MAX_ENTRIES = 100;

export async function corpusOptions(corpora: CorpusStore, corpusJobId: string): Promise<JobOptions> {
  const cached = cache.get(corpusJobId);
  if (cached) return cached;
  const record = await corpora.get(corpusJobId);
  if (!record) throw new Error(`corpus job ${corpusJobId} not found`);
  if (cache.size >= MAX_ENTRIES) cache.delete(cache.keys().next().value!);
  cache.set(corpusJobId, record.options);
  return record.options;
}
