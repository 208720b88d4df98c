import type { Settings } from '../../src/config.js';
import { metricsKeys, type WorkerHeartbeat } from '../../src/metrics/metrics-keys.js';
import { MODELS, type ModelName } from '../../src/models.js';
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
  /** What the gate learned from the provider's answers; null until it has learned something. */
  learned: PerMinute | null;
  /** What the gate lets through now. */
  inForce: PerMinute;
}

export interface RateSource {
  read(): Promise<RateFigures[]>;
}

/**
 * Today's gate exposes no figures of its own, so this reports the configured limits and the target
 * the gate aims at (configured × EMBEDQ_TARGET_UTILIZATION). The adaptive gate replaces this body
 * with its own read of configured, learned and in-force rates; the callers stay as they are.
 */
export function configuredRates(settings: Readonly<Settings>): RateSource {
  return {
    async read() {
      return (Object.keys(MODELS) as ModelName[]).map((model) => {
        const configured = {
          requests: settings.dashscope.requestsPerMinute ?? MODELS[model].defaultRequestsPerMinute,
          tokens: settings.dashscope.tokensPerMinute ?? MODELS[model].defaultTokensPerMinute,
        };
        const target = settings.dashscope.targetUtilization;
        return { model, configured, learned: null, inForce: { requests: configured.requests * target, tokens: configured.tokens * target } };
      });
    },
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

export interface WorkerView extends WorkerHeartbeat {
  /** Seconds since the last heartbeat. */
  ageSeconds: number;
}

/** Worker processes whose heartbeat (sent with each metrics flush) is still fresh. */
export async function liveWorkers(services: Pick<Services, 'redis' | 'settings'>, now = Date.now()): Promise<WorkerView[]> {
  const keys = metricsKeys(services.settings.redisPrefix);
  const ids = await services.redis.zrangebyscore(keys.workers, now - 20_000, '+inf');
  if (ids.length === 0) return [];
  const beats = await services.redis.mget(ids.map((id) => keys.worker(id)));
  return beats
    .filter((beat): beat is string => beat !== null)
    .map((beat) => JSON.parse(beat) as WorkerHeartbeat)
    .map((beat) => ({ ...beat, ageSeconds: Math.max(0, Math.round((now - beat.lastSeen) / 1000)) }))
    .sort((a, b) => a.id.localeCompare(b.id));
}
