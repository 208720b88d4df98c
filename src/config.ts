import * as z from 'zod';

import { ConfigError } from './errors.js';
import type { LoggerSettings } from './logger.js';
import { hashTagOf, parseNodeUrl, redisUrlProblem } from './redis/redis-client.js';

/**
 * Process settings from the environment (DESIGN "Contract"). Parsed once at startup, frozen, and
 * handed down in slices; nothing else in src/ reads process.env.
 */

export const REGION_BASE_URLS = {
  singapore: 'https://dashscope-intl.aliyuncs.com',
  beijing: 'https://dashscope.aliyuncs.com',
  hongkong: 'https://cn-hongkong.dashscope.aliyuncs.com',
} as const;
export type Region = keyof typeof REGION_BASE_URLS;

/** The key the emulator accepts when none is configured; used only for loopback base URLs. */
export const EMULATOR_API_KEY = 'sk-embedq-emulator';

export interface DashScopeSettings {
  /** Secret. Redacted from every log line. */
  apiKey: string;
  /** Scheme and host; the client appends the documented paths. */
  baseUrl: string;
  /** Per-request timeout (Default: 60,000 ms). */
  timeoutMs: number;
  /** Account limits shared by every worker; default: the model's published limits. */
  requestsPerMinute?: number | undefined;
  tokensPerMinute?: number | undefined;
  /** Fraction of the limits the rate gate aims at (Default: 0.99). */
  targetUtilization: number;
  /** Fraction of the limit in force embedq never uses, left to the account's other applications (Default: 0). */
  reserve: number;
  /** How long a learned (lower than configured) limit is remembered in Redis (Default: 3,600,000 ms). */
  learnedLimitTtlMs: number;
}

export interface S3Settings {
  /** `AWS_REGION`; unset: the region of the SDK's own chain (a profile's), else us-east-1. */
  region?: string | undefined;
  /** Set for S3-compatible servers (MinIO, s3rver); unset for AWS. */
  endpoint?: string | undefined;
  forcePathStyle: boolean;
  /** `WHEN_REQUIRED` for servers that reject the SDK's default checksums. */
  checksums: 'WHEN_SUPPORTED' | 'WHEN_REQUIRED';
  /**
   * `S3_TIMEOUT_MS`: the longest a storage request may wait to connect, for its answer, or for the
   * next bytes of an object being read (a request's body adds its time at a slow link's pace)
   * (Default: 30,000 ms; createS3Client's DEFAULT_S3_TIMEOUT_MS when unset).
   */
  timeoutMs?: number | undefined;
  /**
   * Static credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` of the
   * environment given to loadSettings; unset means the SDK's own chain (profiles, roles). Secret.
   */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string | undefined } | undefined;
}

export interface WorkerSettings {
  /** Embed jobs one worker process runs at once (Default: 32). */
  concurrency: number;
  /** How often BullMQ looks for jobs of dead workers (Default: 15,000 ms). */
  stalledIntervalMs: number;
  /**
   * How long a job's lock lasts without renewal; a killed worker's jobs are taken over once it runs
   * out (Default: 30,000 ms).
   */
  lockDurationMs: number;
  /** Shards a corpus job may have open (being embedded) at once; bounds Redis memory (Default: 2). */
  maxOpenShards: number;
  /**
   * Corpus jobs one worker process splits at once (Default: 4). A split lasts while it reads its
   * corpus, which backpressure stretches until all but the job's last maxOpenShards shards are
   * written, so a job past this many large ones stays queued until a split ends; each split holds
   * read-ahead buffers and, with --reuse, the previous output's index.
   */
  splitConcurrency: number;
  /**
   * A worker whose clock is further than this from Redis's refuses to start, and a running one logs
   * an error (Default: 30,000 ms; 0: only the warning). BullMQ times retries and delayed steps by
   * the clock of the worker that stamps or promotes them.
   */
  maxClockSkewMs: number;
}

export interface Settings {
  /** The one Redis (Default: `redis://127.0.0.1:6379`); unused when `redisClusterNodes` is set. */
  redisUrl: string;
  /** Seed nodes of a Redis Cluster (`REDIS_CLUSTER_NODES`); unset for one Redis. */
  redisClusterNodes: readonly string[] | undefined;
  /**
   * Prefix of every Redis key embedq and BullMQ write (Default: `embedq`). On a cluster it must be
   * a hash tag such as `{embedq}`, so every key lands in one slot.
   */
  redisPrefix: string;
  /**
   * How long the record of a job that ended (completed, failed, cancelled) is kept for `status`,
   * `retry` and the dashboard; older ones are removed at the next submit (Default: 30 days; 0: kept
   * for good).
   */
  jobRetentionMs: number;
  /** `embedq worker`: a schedules file (`embedq schedule export`) whose schedules it puts back when Redis lost them. */
  schedulesFile: string | undefined;
  /**
   * `submit --wait` and `schedule run --wait`: how long they keep following a job while Redis cannot
   * be reached before they give up with REDIS_UNAVAILABLE (Default: 300 s; 0: at once).
   */
  waitRedisOutageMs: number;
  dashscope: DashScopeSettings;
  s3: S3Settings;
  worker: WorkerSettings;
  log: LoggerSettings;
}

/**
 * A number from the environment. Empty (`VAR=`, an empty Kubernetes value) is refused rather than
 * read as 0: an empty EMBEDQ_JOB_RETENTION_DAYS meant "keep job records for good".
 */
const envNumber = z.string().trim().min(1, 'is empty: give a number, or unset it for the default').pipe(z.coerce.number());
const positiveInt = envNumber.pipe(z.number().int().positive());
/** Node's timers wait at most 2^31-1 ms; a longer one fired after 1 ms (every request timed out at once). */
const timerMs = positiveInt.pipe(z.number().max(2_147_483_647, 'at most 2147483647 (about 24.8 days): longer waits do not fit a timer'));

const EnvSchema = z
  .object({
    REDIS_URL: z
      .string()
      .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
      .superRefine((value, context) => {
        const problem = redisUrlProblem(value);
        if (problem) context.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    REDIS_CLUSTER_NODES: z
      .string()
      .transform((value, context) => {
        const nodes = value.split(',').map((node) => node.trim()).filter(Boolean);
        if (nodes.length === 0) context.addIssue({ code: 'custom', message: 'list at least one node: host:port or redis[s]://[user:password@]host:port, comma-separated' });
        for (const node of nodes) {
          try {
            parseNodeUrl(node);
          } catch (error) {
            context.addIssue({ code: 'custom', message: (error as Error).message });
          }
        }
        return nodes;
      })
      .optional(),
    // Braces only as a leading hash tag (`{embedq}`): Redis Cluster hashes what is inside them.
    EMBEDQ_REDIS_PREFIX: z
      .string()
      .regex(/^(\{[A-Za-z0-9_-]+\})?[A-Za-z0-9_-]*$/, 'letters, digits, _ and -, optionally in a leading hash tag such as {embedq}')
      .min(1)
      .default('embedq'),
    EMBEDQ_JOB_RETENTION_DAYS: envNumber.pipe(z.number().gte(0)).default(30),
    EMBEDQ_WAIT_REDIS_OUTAGE_S: envNumber.pipe(z.number().gte(0)).default(300),
    EMBEDQ_SCHEDULES_FILE: z.string().min(1).optional(),
    DASHSCOPE_API_KEY: z.string().optional(),
    DASHSCOPE_REGION: z.enum(Object.keys(REGION_BASE_URLS) as [Region, ...Region[]]).optional(),
    DASHSCOPE_BASE_URL: z
      .url({ protocol: /^https?$/, error: 'must be an http(s) URL with scheme and host' })
      .transform((value) => value.replace(/\/+$/, ''))
      .optional(),
    DASHSCOPE_TIMEOUT_MS: timerMs.default(60_000),
    EMBEDQ_QPM: positiveInt.optional(),
    EMBEDQ_TPM: positiveInt.optional(),
    EMBEDQ_TARGET_UTILIZATION: envNumber.pipe(z.number().gt(0).lte(1)).default(0.99),
    EMBEDQ_RESERVE: envNumber.pipe(z.number().gte(0).lt(1)).default(0),
    EMBEDQ_LEARNED_LIMIT_TTL_S: positiveInt.default(3600),
    // Blank (`export AWS_REGION=`, an empty Kubernetes value) reached the SDK as a region: INTERNAL
    // "Region is missing", or a retried storage error. A name, as AWS, MinIO ("us-east-1") or R2 ("auto") use.
    AWS_REGION: z
      .string()
      .regex(/^[A-Za-z0-9._-]+$/, 'must be a region name such as us-east-1 (set but empty or with spaces: unset it to use the SDK chain or us-east-1)')
      .optional(),
    AWS_ENDPOINT_URL_S3: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL with scheme and host' }).optional(),
    S3_FORCE_PATH_STYLE: z.stringbool().default(false),
    S3_CHECKSUMS: z.enum(['WHEN_SUPPORTED', 'WHEN_REQUIRED']).default('WHEN_SUPPORTED'),
    S3_TIMEOUT_MS: timerMs.default(30_000),
    AWS_ACCESS_KEY_ID: z.string().min(1).optional(),
    AWS_SECRET_ACCESS_KEY: z.string().min(1).optional(),
    AWS_SESSION_TOKEN: z.string().min(1).optional(),
    EMBEDQ_CONCURRENCY: positiveInt.default(32),
    EMBEDQ_STALLED_INTERVAL_MS: timerMs.default(15_000),
    EMBEDQ_LOCK_DURATION_MS: timerMs.default(30_000),
    EMBEDQ_MAX_OPEN_SHARDS: positiveInt.default(2),
    EMBEDQ_SPLIT_CONCURRENCY: positiveInt.default(4),
    EMBEDQ_MAX_CLOCK_SKEW_S: envNumber.pipe(z.number().gte(0)).default(30),
    LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    EMBEDQ_ALLOW_INSECURE_HTTP: z.enum(['0', '1']).optional(),
  })
  .superRefine((env, context) => {
    // The API key travels in a header: over plain http it would cross the network in cleartext.
    if (env.DASHSCOPE_BASE_URL?.toLowerCase().startsWith('http://') && !isLoopbackUrl(env.DASHSCOPE_BASE_URL) && env.EMBEDQ_ALLOW_INSECURE_HTTP !== '1') {
      context.addIssue({
        code: 'custom',
        path: ['DASHSCOPE_BASE_URL'],
        message: 'http:// sends the API key in cleartext; use https://, a loopback address, or set EMBEDQ_ALLOW_INSECURE_HTTP=1 (a trusted private network only)',
      });
    }
    if (env.REDIS_CLUSTER_NODES && env.REDIS_URL) {
      context.addIssue({ code: 'custom', path: ['REDIS_CLUSTER_NODES'], message: 'set REDIS_URL (one Redis) or REDIS_CLUSTER_NODES (a cluster), not both' });
    }
    if (env.REDIS_CLUSTER_NODES && !hashTagOf(env.EMBEDQ_REDIS_PREFIX)?.length) {
      context.addIssue({
        code: 'custom',
        path: ['EMBEDQ_REDIS_PREFIX'],
        message: `a Redis Cluster needs a hash-tag prefix such as {${env.EMBEDQ_REDIS_PREFIX.replace(/[{}]/g, '') || 'embedq'}}, so every key of a job and its queues is in one slot`,
      });
    }
    if (env.DASHSCOPE_REGION && env.DASHSCOPE_BASE_URL) {
      context.addIssue({ code: 'custom', path: ['DASHSCOPE_BASE_URL'], message: 'set DASHSCOPE_REGION or DASHSCOPE_BASE_URL, not both' });
    }
  });

/** True for URLs on this machine (the emulator); they need no real API key. */
export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname;
  return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

export interface LoadSettingsOptions {
  /** When false, a missing DASHSCOPE_API_KEY is allowed (commands that never call DashScope). */
  requireApiKey?: boolean;
}

/** Reads and validates the environment; throws one ConfigError listing every problem. */
export function loadSettings(env: NodeJS.ProcessEnv = process.env, options: LoadSettingsOptions = {}): Readonly<Settings> {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(`Invalid environment:\n${formatIssues(parsed.error)}`);
  }
  const e = parsed.data;
  const baseUrl = e.DASHSCOPE_BASE_URL ?? REGION_BASE_URLS[e.DASHSCOPE_REGION ?? 'singapore'];
  let apiKey = e.DASHSCOPE_API_KEY?.trim() ?? '';
  if (!apiKey) {
    if (isLoopbackUrl(baseUrl)) {
      apiKey = EMULATOR_API_KEY;
    } else if (options.requireApiKey !== false) {
      throw new ConfigError(
        `Invalid environment:\n- DASHSCOPE_API_KEY: missing; it is required for ${new URL(baseUrl).origin} (set it, or point DASHSCOPE_BASE_URL at \`embedq emulator\`)`,
      );
    }
  }
  return deepFreeze({
    redisUrl: e.REDIS_URL ?? 'redis://127.0.0.1:6379',
    redisClusterNodes: e.REDIS_CLUSTER_NODES,
    redisPrefix: e.EMBEDQ_REDIS_PREFIX,
    jobRetentionMs: e.EMBEDQ_JOB_RETENTION_DAYS * 24 * 60 * 60 * 1000,
    schedulesFile: e.EMBEDQ_SCHEDULES_FILE,
    waitRedisOutageMs: e.EMBEDQ_WAIT_REDIS_OUTAGE_S * 1000,
    dashscope: {
      apiKey,
      baseUrl,
      timeoutMs: e.DASHSCOPE_TIMEOUT_MS,
      requestsPerMinute: e.EMBEDQ_QPM,
      tokensPerMinute: e.EMBEDQ_TPM,
      targetUtilization: e.EMBEDQ_TARGET_UTILIZATION,
      reserve: e.EMBEDQ_RESERVE,
      learnedLimitTtlMs: e.EMBEDQ_LEARNED_LIMIT_TTL_S * 1000,
    },
    s3: {
      region: e.AWS_REGION,
      endpoint: e.AWS_ENDPOINT_URL_S3,
      forcePathStyle: e.S3_FORCE_PATH_STYLE,
      checksums: e.S3_CHECKSUMS,
      timeoutMs: e.S3_TIMEOUT_MS,
      credentials:
        e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY
          ? { accessKeyId: e.AWS_ACCESS_KEY_ID, secretAccessKey: e.AWS_SECRET_ACCESS_KEY, sessionToken: e.AWS_SESSION_TOKEN }
          : undefined,
    },
    worker: {
      concurrency: e.EMBEDQ_CONCURRENCY,
      stalledIntervalMs: e.EMBEDQ_STALLED_INTERVAL_MS,
      lockDurationMs: e.EMBEDQ_LOCK_DURATION_MS,
      maxOpenShards: e.EMBEDQ_MAX_OPEN_SHARDS,
      splitConcurrency: e.EMBEDQ_SPLIT_CONCURRENCY,
      maxClockSkewMs: e.EMBEDQ_MAX_CLOCK_SKEW_S * 1000,
    },
    log: { level: e.LOG_LEVEL },
  });
}

/** One line per problem: `- PATH: message`. */
/** One line per problem; `name` says what a field is called where the user gave it (a flag, a variable). */
export function formatIssues(error: z.ZodError, name: (path: string) => string = (path) => path): string {
  return error.issues.map((issue) => `- ${issue.path.length > 0 ? name(issue.path.join('.')) : '(options)'}: ${issue.message}`).join('\n');
}

export function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
