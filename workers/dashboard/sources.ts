import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { MODELS, type ModelName } from '../../src/models.js';
import type { GateState } from '../../src/rate/rate-gate.js';
import { readFleetGate, type PacedBy } from '../fleet-gate.js';
import { listSchedules, type ScheduleListRow } from '../schedule-list.js';
import type { Services } from '../services.js';

/**
 * What the dashboard shows besides corpus jobs, each behind a small interface so the parts being
 * built elsewhere plug in at one spot: the adaptive rate gate (learned limit, rate in force) and
 * schedules.
 */

export interface PerMinute {
  requests: number;
  tokens: number;
}

export interface RateFigures {
  model: ModelName;
  /** The account limits from EMBEDQ_QPM / EMBEDQ_TPM, or the model's published ones. */
  configured: PerMinute;
  /**
   * What the gate learned from the provider's answers, per unit (null for a unit it has not
   * learned); null until it has learned something.
   */
  learned: { requests: number | null; tokens: number | null } | null;
  /** What the gate lets through now. */
  inForce: PerMinute;
  /** Whose settings these were read with: the live workers' when they agree, else the dashboard's. */
  pacedBy: PacedBy;
}

export interface RateSource {
  read(): Promise<RateFigures[]>;
}

/**
 * The gate of each model as the workers share it in Redis: the configured ceiling, what it learned
 * from the provider's answers (absent until a cluster of 429s taught it something, and forgotten
 * after EMBEDQ_LEARNED_LIMIT_TTL_S), and the rate it paces at now. The same read as `embedq status`.
 */
export function gateRates(services: Pick<Services, 'redis' | 'settings' | 'rateGate' | 'rateGateAs'>): RateSource {
  return {
    async read() {
      const workers = await liveWorkers(services.redis, services.settings.redisPrefix);
      return Promise.all(
        (Object.keys(MODELS) as ModelName[]).map(async (model) => {
          const { state, pacedBy } = await readFleetGate(services, model, workers);
          return rateFigures(model, state, pacedBy);
        }),
      );
    },
  };
}

/** A gate's state as the dashboard shows it. A unit not learned stays null (it was shown as the configured limit, "learned"). */
export function rateFigures(model: ModelName, state: GateState, pacedBy: PacedBy): RateFigures {
  const { learned } = state;
  const learnedAny = learned.requestsPerMinute !== undefined || learned.tokensPerMinute !== undefined;
  return {
    model,
    configured: { requests: state.configured.requestsPerMinute, tokens: state.configured.tokensPerMinute },
    learned: learnedAny ? { requests: learned.requestsPerMinute ?? null, tokens: learned.tokensPerMinute ?? null } : null,
    inForce: { requests: state.inForce.requestsPerMinute, tokens: state.inForce.tokensPerMinute },
    pacedBy,
  };
}

export type ScheduleView = ScheduleListRow;

export interface ScheduleSource {
  list(): Promise<ScheduleView[]>;
}

/** The schedules as `embedq schedule list --json` shows them. */
export function storedSchedules(services: Services): ScheduleSource {
  return { list: () => listSchedules(services) };
}
