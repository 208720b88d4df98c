import { SlidingWindow } from './sliding-window.js';

/** One second of activity (wall clock), for `history`. */
export interface EmulatorSecond {
  /** Unix time in whole seconds. */
  second: number;
  /** Embedding requests received. */
  requests: number;
  accepted: number;
  rows: number;
  tokens: number;
  /** 429 responses (real and injected). */
  rateLimited: number;
  /** Other non-200 responses and dropped connections. */
  failed: number;
}

/** Counters of accepted traffic for one model. */
export interface EmulatorModelStats {
  accepted: number;
  rows: number;
  tokens: number;
  maxRequestsPerSecond: number;
  maxTokensPerSecond: number;
}

/**
 * What `GET /emulator/stats` returns (and `stats()` in process). The maxima are over exact
 * sliding windows of accepted requests (all models together; per model under `models`), so a
 * test in another process can check that a pool of workers never exceeded a limit.
 */
export interface EmulatorStats {
  /** When counting started (start or last reset), ISO 8601. */
  since: string;
  /** Embedding requests received on both endpoints. */
  requests: number;
  /** Requests answered 200 (or accepted and then dropped on purpose). */
  accepted: number;
  /** Texts in accepted requests. */
  rows: number;
  /** `usage.total_tokens` summed over accepted requests. */
  tokens: number;
  /** Accepted requests whose connection was then destroyed by the drop fault. */
  dropped: number;
  /** TCP connections opened by clients (keep-alive reuse keeps this far below `requests`). */
  connections: number;
  /** Responses by HTTP status (`"200"`, `"429"`, …). */
  byStatus: Record<string, number>;
  /** Error responses by native DashScope code (`Throttling.RateQuota`, …). */
  byCode: Record<string, number>;
  /** Most accepted requests in any sliding 1-second window. */
  maxRequestsPerSecond: number;
  /** Most tokens accepted in any sliding 1-second window. */
  maxTokensPerSecond: number;
  /** Most accepted requests in any sliding 60-second window. */
  maxRequestsPerMinute: number;
  /** Most tokens accepted in any sliding 60-second window. */
  maxTokensPerMinute: number;
  models: Record<string, EmulatorModelStats>;
  /** Limits in force, per model (null = unlimited). */
  limits: {
    requestsPerMinute: number | null;
    tokensPerMinute: number | null;
    requestsPerSecond: number | null;
    tokensPerSecond: number | null;
  };
  /** Seconds with activity within the last {@link HISTORY_SECONDS} seconds, oldest first. */
  history: EmulatorSecond[];
}

/** How much per-second history the stats keep. */
export const HISTORY_SECONDS = 600;

interface ModelCounters extends EmulatorModelStats {
  second: SlidingWindow;
}

/** Collects the emulator's stats. Timestamps: `now` monotonic ms, `wallMs` Unix ms. */
export class StatsRecorder {
  private since = new Date();
  private requests = 0;
  private accepted = 0;
  private rows = 0;
  private tokens = 0;
  private dropped = 0;
  private connections = 0;
  private byStatus: Record<string, number> = {};
  private byCode: Record<string, number> = {};
  private maxRequestsPerSecond = 0;
  private maxTokensPerSecond = 0;
  private maxRequestsPerMinute = 0;
  private maxTokensPerMinute = 0;
  private second = new SlidingWindow(1000);
  private minute = new SlidingWindow(60_000);
  private models = new Map<string, ModelCounters>();
  private history = new Map<number, EmulatorSecond>();

  connected(): void {
    this.connections++;
  }

  received(wallMs: number): void {
    this.requests++;
    this.bucket(wallMs).requests++;
  }

  acceptedRequest(model: string, rows: number, tokens: number, now: number, wallMs: number): void {
    this.accepted++;
    this.rows += rows;
    this.tokens += tokens;
    this.second.add(now, tokens);
    this.minute.add(now, tokens);
    this.maxRequestsPerSecond = Math.max(this.maxRequestsPerSecond, this.second.count(now));
    this.maxTokensPerSecond = Math.max(this.maxTokensPerSecond, this.second.amount(now));
    this.maxRequestsPerMinute = Math.max(this.maxRequestsPerMinute, this.minute.count(now));
    this.maxTokensPerMinute = Math.max(this.maxTokensPerMinute, this.minute.amount(now));
    let counters = this.models.get(model);
    if (!counters) {
      counters = { accepted: 0, rows: 0, tokens: 0, maxRequestsPerSecond: 0, maxTokensPerSecond: 0, second: new SlidingWindow(1000) };
      this.models.set(model, counters);
    }
    counters.accepted++;
    counters.rows += rows;
    counters.tokens += tokens;
    counters.second.add(now, tokens);
    counters.maxRequestsPerSecond = Math.max(counters.maxRequestsPerSecond, counters.second.count(now));
    counters.maxTokensPerSecond = Math.max(counters.maxTokensPerSecond, counters.second.amount(now));
    const bucket = this.bucket(wallMs);
    bucket.accepted++;
    bucket.rows += rows;
    bucket.tokens += tokens;
  }

  /** Records the response status; `code` is the native error code for errors. */
  responded(status: number, code: string | undefined, wallMs: number): void {
    this.byStatus[status] = (this.byStatus[status] ?? 0) + 1;
    if (code) this.byCode[code] = (this.byCode[code] ?? 0) + 1;
    if (status === 429) this.bucket(wallMs).rateLimited++;
    else if (status !== 200) this.bucket(wallMs).failed++;
  }

  droppedConnection(wallMs: number): void {
    this.dropped++;
    this.byStatus.dropped = (this.byStatus.dropped ?? 0) + 1;
    this.bucket(wallMs).failed++;
  }

  snapshot(limits: { requestsPerMinute: number; tokensPerMinute: number }, wallMs: number): EmulatorStats {
    this.prune(wallMs);
    const finite = (value: number): number | null => (Number.isFinite(value) ? value : null);
    return {
      since: this.since.toISOString(),
      requests: this.requests,
      accepted: this.accepted,
      rows: this.rows,
      tokens: this.tokens,
      dropped: this.dropped,
      connections: this.connections,
      byStatus: { ...this.byStatus },
      byCode: { ...this.byCode },
      maxRequestsPerSecond: this.maxRequestsPerSecond,
      maxTokensPerSecond: this.maxTokensPerSecond,
      maxRequestsPerMinute: this.maxRequestsPerMinute,
      maxTokensPerMinute: this.maxTokensPerMinute,
      models: Object.fromEntries(
        [...this.models].map(([model, { second: _window, ...counters }]) => [model, { ...counters }]),
      ),
      limits: {
        requestsPerMinute: finite(limits.requestsPerMinute),
        tokensPerMinute: finite(limits.tokensPerMinute),
        requestsPerSecond: finite(Math.max(1, limits.requestsPerMinute / 60)),
        tokensPerSecond: finite(limits.tokensPerMinute / 60),
      },
      history: [...this.history.values()].sort((left, right) => left.second - right.second).map((entry) => ({ ...entry })),
    };
  }

  private bucket(wallMs: number): EmulatorSecond {
    const second = Math.floor(wallMs / 1000);
    let entry = this.history.get(second);
    if (!entry) {
      entry = { second, requests: 0, accepted: 0, rows: 0, tokens: 0, rateLimited: 0, failed: 0 };
      this.history.set(second, entry);
      if (this.history.size > HISTORY_SECONDS + 60) this.prune(wallMs);
    }
    return entry;
  }

  private prune(wallMs: number): void {
    const oldest = Math.floor(wallMs / 1000) - HISTORY_SECONDS;
    for (const second of this.history.keys()) if (second <= oldest) this.history.delete(second);
  }
}
