import { SlidingWindow } from './sliding-window.js';

/** Per-minute limits; the per-second limits are 1/60 of them (facts §2). Infinity = unlimited. */
export interface RateLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
}

/** Which limit a request would break. */
export type RateVerdict = 'requests' | 'tokens';

interface ModelWindows {
  second: SlidingWindow;
  minute: SlidingWindow;
}

/** Normalises a configured limit: 0, negative or non-finite means unlimited. */
export function normaliseLimit(value: number | undefined, fallback: number): number {
  const limit = value ?? fallback;
  return Number.isFinite(limit) && limit > 0 ? limit : Infinity;
}

/**
 * DashScope-style throttling per model: requests and tokens, per minute and per second (1/60 of
 * the minute limit), over exact sliding windows. Only accepted requests consume quota.
 *
 * Two deliberate allowances: the per-second request limit is rounded up to a whole request (so a
 * 30 QPM limit still lets one through a second, and 90 QPM two, within the minute limit: an exact
 * 1.5 let one through a second, so 90 QPM gave 60), and a request larger than a whole token window
 * is accepted when that window is empty (otherwise it could never pass).
 */
export class RateLimiter {
  private readonly windows = new Map<string, ModelWindows>();

  constructor(private limits: RateLimits) {}

  get current(): RateLimits {
    return { ...this.limits };
  }

  setLimits(limits: RateLimits): void {
    this.limits = { ...limits };
  }

  /** Accepts and records the request, or says which limit it breaks (recording nothing). */
  tryAcquire(model: string, tokens: number, now: number): RateVerdict | undefined {
    const { requestsPerMinute: qpm, tokensPerMinute: tpm } = this.limits;
    let windows = this.windows.get(model);
    if (!windows) {
      windows = { second: new SlidingWindow(1000), minute: new SlidingWindow(60_000) };
      this.windows.set(model, windows);
    }
    const { second, minute } = windows;
    if (qpm !== Infinity) {
      if (second.count(now) + 1 > Math.ceil(qpm / 60) || minute.count(now) + 1 > qpm) return 'requests';
    }
    if (tpm !== Infinity) {
      if (second.count(now) > 0 && second.amount(now) + tokens > tpm / 60) return 'tokens';
      if (minute.count(now) > 0 && minute.amount(now) + tokens > tpm) return 'tokens';
    }
    second.add(now, tokens);
    minute.add(now, tokens);
    return undefined;
  }

  /** Forgets all past requests (a fresh minute). */
  clear(): void {
    this.windows.clear();
  }
}
