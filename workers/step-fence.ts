import type { CorpusStore } from '../jobs/corpus-store.js';

/** A step's job no longer runs in the step's generation: what the step was about to write must not land. */
export class StaleStepError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StaleStepError';
  }
}

/**
 * A worker paused past its lock (SIGSTOP, a frozen VM, a long swap) resumes its step after another
 * worker took the step over, perhaps after the job ended and another job took its output: a
 * paused shard writer replaced a newer job's finished shard, and a paused finalize wrote
 * `_SUCCESS` into the next job's half-written output. The fence throws StaleStepError unless the
 * job still runs in `generation`. Steps call it just before each object they write appears (at
 * the end of a streamed body, before a small write): what is left is the time of one request.
 */
export function stepFence(corpora: CorpusStore, corpusJobId: string, generation: number): () => Promise<void> {
  return async () => {
    const now = await corpora.jobs.stateAndGeneration(corpusJobId);
    if (now?.state === 'running' && now.generation === generation) return;
    throw new StaleStepError(`job ${corpusJobId} is ${now ? `${now.state} in generation ${now.generation}` : 'gone'}, not running in generation ${generation}`);
  };
}

/** `chunks`, then the fence before their end is reported: a store makes the object appear only then. */
export async function* fencedChunks(chunks: AsyncIterable<Uint8Array>, fence: () => Promise<void>): AsyncGenerator<Uint8Array> {
  yield* chunks;
  await fence();
}
