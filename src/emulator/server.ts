import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { COMPAT_EMBEDDING_PATH, NATIVE_EMBEDDING_PATH } from '../dashscope/endpoints.js';
import { ConfigError } from '../errors.js';
import type { Api } from '../models.js';
import { loadTokenizer } from '../tokens/count-tokens.js';
import { setVectorCacheMegabytes } from './emulator-embedding.js';
import { DEFAULT_FAULTS, type EmulatorFaults, type EmulatorOptions, type FaultsPatch, mergeFaults, type TokenCounting } from './emulator-options.js';
import { type EmulatorStats, StatsRecorder } from './emulator-stats.js';
import { EMULATOR_ERRORS, type EmulatorError, errorBody } from './error-catalog.js';
import { type EmbeddingRequestContext, handleEmbeddingRequest } from './handle-embedding-request.js';
import { normaliseLimit, RateLimiter } from './rate-limiter.js';
import { mulberry32 } from '../seeded-random.js';

export type { EmulatorFaults, EmulatorOptions, FaultsPatch, TokenCounting } from './emulator-options.js';
export type { EmulatorStats } from './emulator-stats.js';

/** DashScope's gateway limit on a request body (facts §1b: 16 MiB → 413). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Published text-embedding-v3 limits (facts §2), the default for every model. */
const DEFAULT_QPM = 6000;
const DEFAULT_TPM = 24_000_000;

/** A running emulator; see {@link startEmulator}. */
export interface RunningEmulator {
  /** `http://host:port`, to use as DASHSCOPE_BASE_URL. */
  readonly url: string;
  readonly port: number;
  /** Counters, sliding-window maxima and per-second history (same as `GET /emulator/stats`). */
  stats(): EmulatorStats;
  /** Zeroes the stats (not the rate windows). */
  resetStats(): void;
  /** The faults in force. */
  faults(): EmulatorFaults;
  /** Merges a partial update into the faults (nested objects merge); returns the result. */
  setFaults(patch: FaultsPatch): EmulatorFaults;
  /** Changes the limits (per minute; 0 or Infinity = unlimited) without restarting. */
  setLimits(limits: { qpm?: number | undefined; tpm?: number | undefined }): void;
  /** Forgets past requests, as if the last minute had been idle. */
  clearRateWindows(): void;
  /** Stops listening, destroys open connections and cancels pending delays. */
  close(): Promise<void>;
}

/**
 * Starts a local DashScope-compatible server (`node:http`) speaking the native and the
 * OpenAI-compatible embedding endpoints with the documented shapes, limits and errors, plus:
 *
 * - `GET /emulator/stats`, `POST /emulator/stats/reset`
 * - `GET /emulator/faults`, `POST /emulator/faults` (JSON patch of {@link EmulatorFaults})
 * - `GET /emulator/limits`, `POST /emulator/limits` (`{"qpm": n, "tpm": n}`)
 *
 * In `exact` token counting the Qwen tokenizer is loaded before listening (~0.7 s).
 */
export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  let faults = mergeFaults(structuredClone(DEFAULT_FAULTS) as EmulatorFaults, options.faults ?? {});
  const tokenCounting: TokenCounting = options.tokenCounting ?? 'exact';
  if (tokenCounting !== 'exact' && tokenCounting !== 'estimate') throw new ConfigError(`tokenCounting must be exact or estimate`);
  if (options.vectorCacheMb !== undefined) setVectorCacheMegabytes(options.vectorCacheMb);
  const tokenizer = tokenCounting === 'exact' ? await loadTokenizer() : undefined;
  const limiter = new RateLimiter({
    requestsPerMinute: normaliseLimit(options.qpm, DEFAULT_QPM),
    tokensPerMinute: normaliseLimit(options.tpm, DEFAULT_TPM),
  });
  const random = mulberry32(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  let stats = new StatsRecorder();
  const shutdown = new AbortController();
  // Every delayed response listens on this one signal; hundreds may wait at once.
  setMaxListeners(0, shutdown.signal);
  // Throttling counts a request when it reaches the gateway (its headers), as DashScope's gateway
  // does, not when this process gets round to its body.
  const context = (arrivedAt: number): EmbeddingRequestContext => ({
    apiKey: options.apiKey,
    faults,
    tokenCounting,
    tokenizer,
    limiter,
    random,
    now: () => arrivedAt,
  });

  async function handleEmbedding(api: Api, request: IncomingMessage, response: ServerResponse, rawBody: string, receivedAt: number): Promise<void> {
    const arrivedAt = Date.now();
    const started = performance.now();
    const requestId = randomUUID();
    stats.received(arrivedAt);
    const drop = faults.dropRate > 0 && random() < faults.dropRate;
    const outcome = await handleEmbeddingRequest(api, request.headers.authorization, rawBody, requestId, context(receivedAt));
    if (outcome.ok) stats.acceptedRequest(outcome.model, outcome.rows, outcome.tokens, outcome.acceptedAt, Date.now());
    await delay(sampleDelay(faults, random));
    if (response.destroyed) return;
    if (drop) {
      stats.droppedConnection(Date.now());
      request.socket.destroy();
      return;
    }
    const status = outcome.ok ? 200 : outcome.error.status;
    const body = outcome.ok ? outcome.body : errorBody(api, outcome.error, requestId);
    const headers: Record<string, string> = {
      'x-request-id': requestId,
      'req-arrive-time': String(arrivedAt),
      'resp-start-time': String(Date.now()),
      'req-cost-time': String(Math.round(performance.now() - started)),
      'x-envoy-upstream-service-time': String(Math.round(performance.now() - started)),
      'x-dashscope-call-gateway': 'true',
      server: 'istio-envoy',
    };
    if (status === 429 && faults.retryAfterSeconds !== null) headers['retry-after'] = String(faults.retryAfterSeconds);
    send(response, status, body, headers);
    stats.responded(status, outcome.ok ? undefined : outcome.error.code, Date.now());
  }

  /** Waits, unless the emulator is closing (then returns at once). */
  async function delay(milliseconds: number): Promise<void> {
    if (milliseconds <= 0) return;
    await sleep(milliseconds, undefined, { signal: shutdown.signal }).catch(() => undefined);
  }

  function applyLimits(update: { qpm?: unknown; tpm?: unknown }): void {
    const current = limiter.current;
    const read = (value: unknown, fallback: number, name: string): number => {
      if (value === undefined) return fallback;
      if (value === null) return Infinity;
      if (typeof value !== 'number' || Number.isNaN(value) || value < 0) throw new ConfigError(`${name} must be a number ≥ 0 (0 = unlimited)`);
      return normaliseLimit(value, fallback);
    };
    limiter.setLimits({
      requestsPerMinute: read(update.qpm, current.requestsPerMinute, 'qpm'),
      tokensPerMinute: read(update.tpm, current.tokensPerMinute, 'tpm'),
    });
  }

  const snapshot = (): EmulatorStats => stats.snapshot(limiter.current, Date.now());

  async function route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const api: Api | undefined = path === NATIVE_EMBEDDING_PATH ? 'dashscope' : path === COMPAT_EMBEDDING_PATH ? 'openai' : undefined;
    if (api) {
      const receivedAt = performance.now();
      if (request.method !== 'POST') return sendError(response, api, { ...EMULATOR_ERRORS.notFound, status: 405, message: 'Method Not Allowed.' });
      const body = await readBody(request);
      if (body === undefined) {
        // Do not read the rest of an oversized body: answer, then close the connection.
        response.setHeader('connection', 'close');
        return sendError(response, api, EMULATOR_ERRORS.tooLarge);
      }
      return handleEmbedding(api, request, response, body, receivedAt);
    }
    const control = `${request.method} ${path}`;
    try {
      switch (control) {
        case 'GET /emulator/stats':
          return sendJson(response, 200, snapshot());
        case 'POST /emulator/stats/reset':
          stats = new StatsRecorder();
          return sendJson(response, 200, snapshot());
        case 'GET /emulator/faults':
          return sendJson(response, 200, faults);
        case 'POST /emulator/faults':
          faults = mergeFaults(faults, parseJson(await readBody(request)));
          return sendJson(response, 200, faults);
        case 'GET /emulator/limits':
          return sendJson(response, 200, snapshot().limits);
        case 'POST /emulator/limits':
          applyLimits(parseJson(await readBody(request)) as { qpm?: unknown; tpm?: unknown });
          return sendJson(response, 200, snapshot().limits);
        default:
          // In the envelope of the API the path is under (facts §1a): a compatible-mode client reads `error`.
          return sendError(response, path.startsWith('/compatible-mode/') ? 'openai' : 'dashscope', EMULATOR_ERRORS.notFound);
      }
    } catch (error) {
      if (error instanceof ConfigError) return sendJson(response, 400, { code: 'InvalidParameter', message: error.message });
      throw error;
    }
  }

  const server = createServer((request, response) => {
    route(request, response).catch((error: unknown) => {
      // A bug in the emulator: answer like DashScope's own internal error rather than hang.
      if (!response.headersSent && !response.destroyed) sendError(response, 'dashscope', { ...EMULATOR_ERRORS.internal, message: `Emulator error: ${String(error)}` });
    });
  });
  server.on('connection', () => stats.connected());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    stats: snapshot,
    resetStats: () => {
      stats = new StatsRecorder();
    },
    faults: () => structuredClone(faults),
    setFaults: (patch) => {
      faults = mergeFaults(faults, patch);
      return structuredClone(faults);
    },
    setLimits: (limits) => applyLimits(limits),
    clearRateWindows: () => limiter.clear(),
    close: async () => {
      shutdown.abort();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/** The body as text, or undefined when it is larger than {@link MAX_BODY_BYTES}. */
async function readBody(request: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(body: string | undefined): unknown {
  try {
    return JSON.parse(body ?? '');
  } catch {
    throw new ConfigError('body must be JSON');
  }
}

function send(response: ServerResponse, status: number, body: string | Uint8Array, headers: Record<string, string> = {}): void {
  response.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength,
  });
  response.end(body);
}

const sendJson = (response: ServerResponse, status: number, value: unknown): void => send(response, status, JSON.stringify(value));

function sendError(response: ServerResponse, api: Api, error: EmulatorError): void {
  const requestId = randomUUID();
  send(response, error.status, errorBody(api, error, requestId), { 'x-request-id': requestId });
}

/**
 * Latency of one response: `min + lognormal(median - min, p99 - min)`, capped at 4 × p99, plus
 * `slowMs` for the slow fault. z(0.99) = 2.3263 sets the lognormal's sigma from the p99/median ratio.
 */
export function sampleDelay(faults: EmulatorFaults, random: () => number): number {
  const { min, median, p99 } = faults.latencyMs;
  let delay = min;
  if (median > min) {
    const mu = Math.log(median - min);
    const sigma = p99 > median ? Math.log((p99 - min) / (median - min)) / 2.3263 : 0;
    delay = Math.min(min + Math.exp(mu + sigma * standardNormal(random)), Math.max(p99, median) * 4);
  }
  if (faults.slowRate > 0 && random() < faults.slowRate) delay += faults.slowMs;
  return delay;
}

function standardNormal(random: () => number): number {
  const u = 1 - random(); // (0, 1]
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

