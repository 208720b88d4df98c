import * as z from 'zod';

import { formatIssues } from '../config.js';
import { ConfigError } from '../errors.js';

/**
 * Faults the emulator injects, settable at start, by CLI flags, by `EMBEDQ_EMULATOR_*` variables
 * and at run time (`setFaults`, `POST /emulator/faults`). Probabilities are per embedding request.
 */
export interface EmulatorFaults {
  /**
   * Added latency per response: `min + X` where X is lognormal with median `median - min` and
   * 99th percentile `p99 - min`, capped at 4 × p99. All zero (the default) means no delay.
   */
  latencyMs: { min: number; median: number; p99: number };
  /** Probability of an injected 429 of each kind: requests (RateQuota), tokens (AllocationQuota), burst (BurstRate). */
  failRate429: { requests: number; tokens: number; burst: number };
  /** Probability of an injected 500 InternalError. */
  failRate500: number;
  /** A text containing this word gets 400 DataInspectionFailed; empty disables (Default: `EMBEDQ_BLOCKED`). */
  blockedWord: string;
  /** Probability that a successful response lists its items in a shuffled (never identical) order. */
  shuffleRate: number;
  /** Probability that the connection is destroyed instead of answered (after the request was processed). */
  dropRate: number;
  /** Probability of a slow response, which waits `slowMs` more (to trip client timeouts). */
  slowRate: number;
  /** Extra delay of a slow response (Default: 30,000 ms). */
  slowMs: number;
  /** When set, 429 responses carry `Retry-After: <seconds>`; DashScope documents none (Default: null, off). */
  retryAfterSeconds: number | null;
}

export const DEFAULT_FAULTS: Readonly<EmulatorFaults> = Object.freeze({
  latencyMs: { min: 0, median: 0, p99: 0 },
  failRate429: { requests: 0, tokens: 0, burst: 0 },
  failRate500: 0,
  blockedWord: 'EMBEDQ_BLOCKED',
  shuffleRate: 0,
  dropRate: 0,
  slowRate: 0,
  slowMs: 30_000,
  retryAfterSeconds: null,
});

const probability = z.number().min(0).max(1);
const milliseconds = z.number().min(0).max(600_000);

/** A partial fault update, as `setFaults` and `POST /emulator/faults` take it. Nested objects merge. */
export const FaultsPatchSchema = z
  .object({
    latencyMs: z
      .object({ min: milliseconds, median: milliseconds, p99: milliseconds })
      .partial()
      .strict(),
    failRate429: z.object({ requests: probability, tokens: probability, burst: probability }).partial().strict(),
    failRate500: probability,
    blockedWord: z.string(),
    shuffleRate: probability,
    dropRate: probability,
    slowRate: probability,
    slowMs: milliseconds,
    retryAfterSeconds: z.number().int().min(0).max(3600).nullable(),
  })
  .partial()
  .strict();
export type FaultsPatch = z.infer<typeof FaultsPatchSchema>;

/** Applies a patch to faults; throws ConfigError listing every problem. */
export function mergeFaults(current: EmulatorFaults, patch: unknown): EmulatorFaults {
  const parsed = FaultsPatchSchema.safeParse(patch);
  if (!parsed.success) throw new ConfigError(`Invalid emulator faults:\n${formatIssues(parsed.error)}`);
  const update = parsed.data;
  const latencyMs = { ...current.latencyMs, ...update.latencyMs };
  if (!(latencyMs.min <= latencyMs.median && latencyMs.median <= latencyMs.p99)) {
    throw new ConfigError(`Invalid emulator faults:\n- latencyMs: need min ≤ median ≤ p99, got ${latencyMs.min}, ${latencyMs.median}, ${latencyMs.p99}`);
  }
  return {
    ...current,
    ...update,
    latencyMs,
    failRate429: { ...current.failRate429, ...update.failRate429 },
  };
}

/** How the emulator counts tokens for `usage` and TPM. */
export type TokenCounting = 'exact' | 'estimate';

/** Options of {@link startEmulator}. */
export interface EmulatorOptions {
  /** TCP port; 0 picks a free one (Default: 0; the CLI defaults to 8089). */
  port?: number | undefined;
  /** Interface to listen on (Default: `127.0.0.1`). */
  host?: string | undefined;
  /** When set, only this Bearer token is valid; otherwise any non-empty token is (Default: unset). */
  apiKey?: string | undefined;
  /** Requests per minute per model, also enforced per second at 1/60; 0 or Infinity = unlimited (Default: 6,000). */
  qpm?: number | undefined;
  /** Tokens per minute per model, also enforced per second at 1/60; 0 or Infinity = unlimited (Default: 24,000,000). */
  tpm?: number | undefined;
  /**
   * `exact` (default): Qwen BPE count per text, ~1 µs per character warm (~3 µs cold), which
   * costs ~4 ms of CPU per 10-line request of 400-character lines. `estimate`: the cheap
   * CJK/3 estimate, with the exact count only for texts over 8,192 UTF-8 bytes (to enforce the
   * length limit); for benchmarks that drive ~1,000 lines/s next to the workers.
   */
  tokenCounting?: TokenCounting | undefined;
  /** Initial faults (merged over {@link DEFAULT_FAULTS}). */
  faults?: FaultsPatch | undefined;
  /** Seed of the fault dice, for reproducible runs (Default: random). */
  seed?: number | undefined;
  /** Memory budget of the per-token vector cache (Default: 64 MB). */
  vectorCacheMb?: number | undefined;
}

/**
 * Reads `EMBEDQ_EMULATOR_*` variables into options (CLI flags override them). The caller passes
 * the environment, so src/ never reads process.env itself.
 *
 * PORT, HOST, API_KEY, QPM, TPM, TOKEN_COUNTING, SEED, LATENCY_MS (`min,median,p99`),
 * FAIL_RATE_429 (`p` for the requests kind, or `requests=p,tokens=p,burst=p`), FAIL_RATE_500,
 * BLOCKED_WORD, SHUFFLE_RATE, DROP_RATE, SLOW_RATE, SLOW_MS, RETRY_AFTER_S, VECTOR_CACHE_MB.
 */
export function emulatorOptionsFromEnv(env: NodeJS.ProcessEnv): EmulatorOptions {
  const read = (name: string): string | undefined => {
    const value = env[`EMBEDQ_EMULATOR_${name}`];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const problems: string[] = [];
  const collect = <T>(name: string, parse: (value: string) => T): T | undefined => {
    const value = read(name);
    if (value === undefined) return undefined;
    try {
      return parse(value);
    } catch (error) {
      problems.push(`- EMBEDQ_EMULATOR_${name}: ${(error as Error).message}`);
      return undefined;
    }
  };
  const faults: FaultsPatch = {};
  const options: EmulatorOptions = {
    port: collect('PORT', parsePort),
    host: read('HOST'),
    apiKey: read('API_KEY'),
    qpm: collect('QPM', parseLimit),
    tpm: collect('TPM', parseLimit),
    tokenCounting: collect('TOKEN_COUNTING', parseTokenCounting),
    seed: collect('SEED', (value) => parseNumber(value, 0, 2 ** 32)),
    vectorCacheMb: collect('VECTOR_CACHE_MB', (value) => parseNumber(value, 0, 65_536)),
  };
  const latency = collect('LATENCY_MS', parseLatency);
  if (latency) faults.latencyMs = latency;
  const rate429 = collect('FAIL_RATE_429', parseFailRate429);
  if (rate429) faults.failRate429 = rate429;
  const rate500 = collect('FAIL_RATE_500', parseProbability);
  if (rate500 !== undefined) faults.failRate500 = rate500;
  const blocked = env.EMBEDQ_EMULATOR_BLOCKED_WORD;
  if (blocked !== undefined) faults.blockedWord = blocked.trim();
  const shuffle = collect('SHUFFLE_RATE', parseProbability);
  if (shuffle !== undefined) faults.shuffleRate = shuffle;
  const drop = collect('DROP_RATE', parseProbability);
  if (drop !== undefined) faults.dropRate = drop;
  const slow = collect('SLOW_RATE', parseProbability);
  if (slow !== undefined) faults.slowRate = slow;
  const slowMs = collect('SLOW_MS', (value) => parseNumber(value, 0, 600_000));
  if (slowMs !== undefined) faults.slowMs = slowMs;
  const retryAfter = collect('RETRY_AFTER_S', (value) => Math.round(parseNumber(value, 0, 3600)));
  if (retryAfter !== undefined) faults.retryAfterSeconds = retryAfter;
  if (problems.length > 0) throw new ConfigError(`Invalid environment:\n${problems.join('\n')}`);
  if (Object.keys(faults).length > 0) options.faults = faults;
  return options;
}

/** A number within [min, max]; throws with a readable message. */
export function parseNumber(value: string, min: number, max: number): number {
  const number = Number(value.replaceAll('_', ''));
  if (value.trim() === '' || !Number.isFinite(number) || number < min || number > max) {
    throw new Error(`expected a number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return number;
}

export const parseProbability = (value: string): number => parseNumber(value, 0, 1);

export function parsePort(value: string): number {
  const port = parseNumber(value, 0, 65_535);
  if (!Number.isInteger(port)) throw new Error(`expected a port number, got ${JSON.stringify(value)}`);
  return port;
}

/** A per-minute limit; 0, `Infinity` or `unlimited` mean no limit. */
export function parseLimit(value: string): number {
  if (/^(inf|infinity|unlimited)$/i.test(value.trim())) return Infinity;
  return parseNumber(value, 0, Number.MAX_SAFE_INTEGER);
}

export function parseTokenCounting(value: string): TokenCounting {
  if (value === 'exact' || value === 'estimate') return value;
  throw new Error(`expected exact or estimate, got ${JSON.stringify(value)}`);
}

/** `min,median,p99` in milliseconds, or one number for a constant delay. */
export function parseLatency(value: string): EmulatorFaults['latencyMs'] {
  const parts = value.split(',').map((part) => parseNumber(part.trim(), 0, 600_000));
  if (parts.length === 1) return { min: parts[0]!, median: parts[0]!, p99: parts[0]! };
  if (parts.length !== 3) throw new Error(`expected min,median,p99 in ms, got ${JSON.stringify(value)}`);
  const [min, median, p99] = parts as [number, number, number];
  if (!(min <= median && median <= p99)) throw new Error(`need min ≤ median ≤ p99, got ${JSON.stringify(value)}`);
  return { min, median, p99 };
}

/** `p` (requests kind) or `requests=p,tokens=p,burst=p` (any subset). */
export function parseFailRate429(value: string): Partial<EmulatorFaults['failRate429']> {
  if (!value.includes('=')) return { requests: parseProbability(value) };
  const rates: Partial<EmulatorFaults['failRate429']> = {};
  for (const part of value.split(',')) {
    const [kind, rate] = part.split('=').map((piece) => piece.trim());
    if (kind !== 'requests' && kind !== 'tokens' && kind !== 'burst') {
      throw new Error(`expected requests=, tokens= or burst=, got ${JSON.stringify(part)}`);
    }
    rates[kind] = parseProbability(rate ?? '');
  }
  return rates;
}
