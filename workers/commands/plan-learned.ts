import { EmbedqError } from '../../src/errors.js';
import { formatCount as n } from '../../src/format-count.js';
import { liveWorkers } from '../../src/metrics/read-metrics.js';
import type { ModelName } from '../../src/models.js';
import { describeLearnedLimits, describeRemembered } from '../../src/rate/describe-gate.js';
import { pacingDisagreement } from '../../src/rate/fleet-pacing.js';
import type { RateLimits } from '../../src/rate/rate-gate.js';
import { describePacedBy, readFleetGate } from '../fleet-gate.js';
import { withServices } from './context.js';

/** A limit the gate learned, as `embedq plan` times a run under it. */
export interface LearnedPacing {
  /** The ceiling the gate was read with (the live workers' when they agree, as `status` reads it). */
  limits: RateLimits;
  /** The rates in force: what the next job meets (margin, reserve and target applied). */
  paced: RateLimits;
  /** For `--json`'s `learned`. */
  json: { requestsPerMinute?: number; tokensPerMinute?: number; expiresInMs: number | null; shared: boolean; pacedBy: string };
  /** For the `time` line, after the rate: what was learned, the ceiling, and whose settings. */
  description: string;
  /** How the live workers' settings differ, when they do (the `fleet` line `status` prints too). */
  fleetProblem?: string | undefined;
}

/**
 * `embedq plan`'s look at the shared gate: a limit the gate learned on this account (remembered
 * in Redis for an hour) times the run as the next job will meet it; at the configured ceiling, a
 * plan told 6,000 QPM when the account takes 900 said a seventh of the time. plan calls it only
 * where the environment names a Redis (`REDIS_URL`, `REDIS_CLUSTER_NODES`): it needs no Redis
 * otherwise, a laptop's default `127.0.0.1:6379` is not the fleet's, and this module's imports
 * (BullMQ, ioredis) are loaded only then. Read as `embedq status` reads it, limits and rates alike
 * (the live workers' settings when they agree: a plan that mixed the shell's reserve into the
 * token rate and the workers' into the request rate timed neither). `learned` is undefined when
 * nothing is learned; a Redis that cannot be read is said in `error`. Either way the plan then
 * times the run at its own configured limit.
 */
export async function readLearnedGate(model: ModelName): Promise<{ learned?: LearnedPacing; error?: string }> {
  try {
    const { state, pacedBy, workers } = await withServices(async (services) => {
      const live = await liveWorkers(services.redis, services.settings.redisPrefix);
      return { ...(await readFleetGate(services, model, live)), workers: live };
    });
    const { requestsPerMinute, tokensPerMinute } = state.learned;
    if (requestsPerMinute === undefined && tokensPerMinute === undefined) return {};
    const whose = describePacedBy(pacedBy, 'this shell');
    const expires = state.learnedExpiresInMs === undefined ? '' : `, ${describeRemembered(state.learnedExpiresInMs)}`;
    return {
      learned: {
        limits: state.configured,
        paced: state.inForce,
        json: { requestsPerMinute, tokensPerMinute, expiresInMs: state.learnedExpiresInMs ?? null, shared: state.shared, pacedBy },
        description:
          `the rate in force under the limit the gate learned on this account (${describeLearnedLimits(state.learned)}${expires}; ` +
          `configured ${n(state.configured.requestsPerMinute)} QPM / ${n(state.configured.tokensPerMinute)} TPM; ${whose})`,
        // "The workers' settings differ (below)": the line below says how, as in `embedq status`.
        fleetProblem: pacingDisagreement(workers),
      },
    };
  } catch (error) {
    if (error instanceof EmbedqError) return { error: error.message };
    throw error;
  }
}
