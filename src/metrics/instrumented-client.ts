import type { EmbeddingClient } from '../embedding.js';
import {
  ProviderAccountError,
  ProviderRateLimitedError,
  ProviderRejectedError,
  ProviderUnavailableError,
  RequestInvalidError,
  type ProviderFailure,
} from '../errors.js';
import { METRICS } from './metric-names.js';
import type { MetricsRecorder } from './metrics-recorder.js';

/** The `outcome` label: by error class, so subclasses (content rejected) count with their family. */
function outcomeOf(error: unknown): string {
  if (error instanceof ProviderRateLimitedError) return 'rate_limited';
  if (error instanceof ProviderRejectedError) return 'rejected';
  if (error instanceof ProviderUnavailableError) return 'unavailable';
  if (error instanceof ProviderAccountError) return 'account';
  if (error instanceof RequestInvalidError) return 'invalid';
  return 'other';
}

/**
 * Counts every DashScope request (outcome, HTTP status, latency) and, for the corpus job in scope,
 * its requests and 429s (`options.corpusJobId`). Wrapping the client keeps the processors free of
 * instrumentation.
 */
export function instrumentEmbeddingClient(client: EmbeddingClient, metrics: MetricsRecorder): EmbeddingClient {
  return {
    async embed(texts, parameters, options) {
      const started = performance.now();
      let outcome = 'ok';
      let status = '200';
      try {
        return await client.embed(texts, parameters, options);
      } catch (error) {
        // Cut by its caller (a cancel, a stopping worker): not the provider's answer, and counted as
        // `other` it looked like an unexplained failure beside every cancel.
        outcome = options?.signal?.aborted ? 'aborted' : outcomeOf(error);
        const failure = (error as { failure?: ProviderFailure }).failure;
        status = failure?.status === undefined ? 'none' : String(failure.status);
        throw error;
      } finally {
        metrics.increment(METRICS.requests, { outcome, status });
        metrics.observe(METRICS.requestDuration, (performance.now() - started) / 1000);
        metrics.incrementJob(options?.corpusJobId, 'requests');
        if (outcome === 'rate_limited') metrics.incrementJob(options?.corpusJobId, 'throttled');
      }
    },
    close: () => client.close(),
  };
}
