import type { Logger } from '../src/logger.js';
import { noteScheduledRunFailed } from './schedule-outcome.js';
import type { Services } from './services.js';
import { releaseOutputOfFailed } from './settle-stopped.js';

export interface FailureOf {
  corpusJobId: string;
  /** Fenced: a late failure of an earlier generation does not fail the retried job. */
  generation: number | undefined;
  code: string;
  /** The step that failed (`<name> <BullMQ id>`); the job record keeps `<step>: <reason>`. */
  step: string;
  reason: string;
  /** The step failing the job (still active while its processor returns), if a processor of ours. */
  failingStep?: string | undefined;
  /** This worker process's drain signal; with it, the output is given back once the job's steps stop. */
  stopping?: AbortSignal | undefined;
}

/**
 * Fails a corpus job, and if this call is the one that failed it, does what follows: its schedule
 * counts the failure, and (from a processor) its output lease goes back once its steps stop.
 * The one way a step's failure fails its corpus job: the processor's catch and the failed-set sweep.
 * `logger` binds `corpusJobId` (a job's logger), so what follows does not repeat it.
 */
export async function failCorpusJob(services: Services, failure: FailureOf, logger: Logger): Promise<boolean> {
  const { corpusJobId, code, reason } = failure;
  if (!(await services.corpora.jobs.markFailed(corpusJobId, `${failure.step}: ${reason}`, code, failure.generation))) return false;
  if (failure.stopping) releaseOutputOfFailed(services, corpusJobId, failure.failingStep, failure.stopping, logger);
  await noteScheduledRunFailed(services, corpusJobId, `${code}: ${reason}`, logger);
  return true;
}
