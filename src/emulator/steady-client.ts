import { sleep } from '../sleep.js';

/** One second of the client's traffic, keyed by the Unix second it was sent in. */
export interface SteadySecond {
  sent: number;
  limited: number;
  accepted: number;
}

export interface SteadyClient {
  /** Stops sending, waits for the requests in flight, and returns the per-second counts. */
  stop(): Promise<Map<number, SteadySecond>>;
  /** The per-second counts so far (live). */
  readonly bySecond: Map<number, SteadySecond>;
}

/**
 * Another application on the same account, for the tests and the bench of the gate's politeness:
 * a steady `perSecond` one-text requests to the emulator's native endpoint, no retries, counting
 * its 429s. It goes through the same emulator limits as embedq, so its 429s are what a live search
 * service beside a batch job would see.
 */
export function startSteadyClient(baseUrl: string, perSecond: number): SteadyClient {
  const bySecond = new Map<number, SteadySecond>();
  const inFlight = new Set<Promise<void>>();
  let running = true;
  const loop = (async () => {
    const interval = 1000 / perSecond;
    let next = performance.now();
    while (running) {
      next += interval;
      const second = Math.floor(Date.now() / 1000);
      const entry = bySecond.get(second) ?? { sent: 0, limited: 0, accepted: 0 };
      bySecond.set(second, entry);
      entry.sent += 1;
      const request = fetch(`${baseUrl}/api/v1/services/embeddings/text-embedding/text-embedding`, {
        method: 'POST',
        headers: { authorization: 'Bearer sk-other-app', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'text-embedding-v4', input: { texts: ['a live search query'] }, parameters: { dimension: 256 } }),
      })
        .then(async (response) => {
          await response.arrayBuffer();
          if (response.status === 429) entry.limited += 1;
          else if (response.ok) entry.accepted += 1;
        })
        .catch(() => undefined)
        .finally(() => inFlight.delete(request));
      inFlight.add(request);
      await sleep(Math.max(0, next - performance.now()));
    }
  })();
  return {
    bySecond,
    async stop() {
      running = false;
      await loop;
      await Promise.all(inFlight);
      return bySecond;
    },
  };
}
