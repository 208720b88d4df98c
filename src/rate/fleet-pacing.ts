import type { DashScopeSettings } from '../config.js';
import { MODEL_NAMES, MODELS, type ModelName } from '../models.js';

/**
 * The settings a worker paces its DashScope requests by. The gate's schedule and learned limit
 * are shared in Redis, but each worker books slots with its own ceiling, reserve and target, so a
 * fleet whose workers disagree paces by whichever booked last (or, on another base URL, by a gate
 * of its own). Workers publish these in their heartbeat; disagreement is shown where the operator
 * looks (the worker's log at start, the dashboard, `embedq status`).
 */
export interface WorkerPacing {
  /** Scheme and host only: the gate is per base URL. */
  baseUrl: string;
  /**
   * The ceiling each model gets: one number when all models get the same (an unset EMBEDQ_QPM is
   * each model's default, so a worker that sets the default value paces as one that sets nothing),
   * else `model=value` per model.
   */
  requestsPerMinute: number | string;
  tokensPerMinute: number | string;
  reserve: number;
  targetUtilization: number;
}

const SETTING_NAMES: ReadonlyArray<[keyof WorkerPacing, string]> = [
  ['baseUrl', 'DASHSCOPE_BASE_URL'],
  ['requestsPerMinute', 'EMBEDQ_QPM'],
  ['tokensPerMinute', 'EMBEDQ_TPM'],
  ['reserve', 'EMBEDQ_RESERVE'],
  ['targetUtilization', 'EMBEDQ_TARGET_UTILIZATION'],
];

export function pacingOf(settings: Pick<DashScopeSettings, 'baseUrl' | 'requestsPerMinute' | 'tokensPerMinute' | 'reserve' | 'targetUtilization'>): WorkerPacing {
  let baseUrl = settings.baseUrl;
  try {
    // A user:password@ in the URL must not reach Redis or the dashboard.
    baseUrl = new URL(settings.baseUrl).origin;
  } catch {
    // Settings were validated at load; keep what is there.
  }
  return {
    baseUrl,
    requestsPerMinute: perModel((model) => settings.requestsPerMinute ?? MODELS[model].defaultRequestsPerMinute),
    tokensPerMinute: perModel((model) => settings.tokensPerMinute ?? MODELS[model].defaultTokensPerMinute),
    reserve: settings.reserve,
    targetUtilization: settings.targetUtilization,
  };
}

function perModel(limit: (model: ModelName) => number): number | string {
  const limits = MODEL_NAMES.map((model) => [model, limit(model)] as const);
  return limits.every(([, value]) => value === limits[0]![1]) ? limits[0]![1] : limits.map(([model, value]) => `${model}=${value}`).join(',');
}

/**
 * What the given processes disagree on, as one sentence naming each setting's values and who has
 * them, or undefined when they agree. Processes without pacing (workers of an older version) are
 * left out.
 */
export function pacingDisagreement(processes: ReadonlyArray<{ id: string; pacing?: WorkerPacing | undefined }>): string | undefined {
  const known = processes.filter((process): process is { id: string; pacing: WorkerPacing } => process.pacing !== undefined);
  const differences = SETTING_NAMES.flatMap(([field, variable]) => {
    const holders = new Map<string, string[]>();
    for (const { id, pacing } of known) {
      const value = String(pacing[field]);
      holders.set(value, [...(holders.get(value) ?? []), id]);
    }
    if (holders.size < 2) return [];
    return [`${variable} ${[...holders].map(([value, ids]) => `${value} (${ids.join(', ')})`).join(' vs ')}`];
  });
  if (differences.length === 0) return undefined;
  return (
    `workers pace by different settings: ${differences.join('; ')}. Each paces by its own, so together they may overrun ` +
    'the quota or leave part of it unused: give every worker the same settings'
  );
}

/**
 * The pacing the live workers share: what the shared gate's limits are, as far as anyone can say.
 * Undefined when no live worker publishes one (none running, or all of an older version) or they
 * differ (each then paces by its own).
 */
export function sharedPacing(workers: ReadonlyArray<{ id: string; pacing?: WorkerPacing | undefined }>): WorkerPacing | undefined {
  const first = workers.find((worker) => worker.pacing !== undefined)?.pacing;
  return first && pacingDisagreement(workers) === undefined ? first : undefined;
}

/** A model's ceiling in a pacing's field: the value all models share, or its own of `model=value,…`. */
export function modelLimit(value: number | string, model: ModelName): number | undefined {
  if (typeof value === 'number') return value;
  const own = value
    .split(',')
    .map((entry) => entry.split('='))
    .find(([name]) => name === model)?.[1];
  const limit = Number(own);
  return own !== undefined && Number.isFinite(limit) && limit > 0 ? limit : undefined;
}
