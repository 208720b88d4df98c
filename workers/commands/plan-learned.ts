import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { EmbedqError } from '../../src/errors.js';
import type { ModelName } from '../../src/models.js';
import type { GateState } from '../../src/rate/rate-gate.js';
import { readFleetGate } from '../fleet-gate.js';
import { withServices } from './context.js';

/**
 * `embedq plan`'s look at the shared gate: a limit the gate learned on this account (remembered
 * in Redis for an hour) times the run as the next job will meet it; at the configured ceiling, a
 * plan told 6,000 QPM when the account takes 900 said a seventh of the time. plan calls it only
 * where the environment names a Redis (`REDIS_URL`, `REDIS_CLUSTER_NODES`): it needs no Redis
 * otherwise, a laptop's default `127.0.0.1:6379` is not the fleet's, and this module's imports
 * (BullMQ, ioredis) are loaded only then. Read as `embedq status` reads it (the live workers'
 * settings when they agree). A Redis that cannot be read is said in `error`; the plan then times
 * the run at the configured limit.
 */
export async function readLearnedGate(model: ModelName): Promise<{ state?: GateState; error?: string }> {
  try {
    const { state } = await withServices(async (services) => readFleetGate(services, model, await liveWorkers(services.redis, services.settings.redisPrefix)));
    return { state };
  } catch (error) {
    if (error instanceof EmbedqError) return { error: error.message };
    throw error;
  }
}
