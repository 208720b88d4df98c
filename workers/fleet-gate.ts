import type { WorkerView } from '../src/metrics/read-metrics.js';
import type { ModelName } from '../src/models.js';
import { sharedPacing } from '../src/rate/fleet-pacing.js';
import type { GateState } from '../src/rate/rate-gate.js';
import type { Services } from './services.js';

/** Whose settings a gate's state was read with. */
export type PacedBy = 'workers' | 'no-live-worker' | 'workers-differ' | 'workers-unknown';

/**
 * A model's shared gate as the fleet paces it. The gate's limits (ceiling, reserve, target) and
 * its key (per base URL) are each worker's own settings: read with the reader's, a shell without
 * the workers' EMBEDQ_QPM showed the default ceiling, and one with another DASHSCOPE_BASE_URL
 * another gate, "learned none". So the live workers' settings (from their heartbeats) are used
 * when they agree (`live`: the live workers, as liveWorkers reads them), and the reader's own
 * otherwise, saying so.
 */
export async function readFleetGate(
  services: Pick<Services, 'rateGate' | 'rateGateAs'>,
  model: ModelName,
  live: readonly WorkerView[],
): Promise<{ state: GateState; pacedBy: PacedBy }> {
  const pacing = sharedPacing(live);
  if (pacing) return { state: await services.rateGateAs(model, pacing).state(), pacedBy: 'workers' };
  const pacedBy = live.length === 0 ? 'no-live-worker' : live.some((worker) => worker.pacing !== undefined) ? 'workers-differ' : 'workers-unknown';
  return { state: await services.rateGate(model).state(), pacedBy };
}

/** What `embedq status` adds to its gate line: whose settings it was read with. */
export function describePacedBy(pacedBy: PacedBy, reader: string): string {
  switch (pacedBy) {
    case 'workers':
      return "by the live workers' settings";
    case 'no-live-worker':
      return `no live worker: by ${reader}'s settings`;
    case 'workers-differ':
      return `the workers' settings differ (below): by ${reader}'s`;
    case 'workers-unknown':
      return `the live workers publish no settings (an older version): by ${reader}'s`;
  }
}
