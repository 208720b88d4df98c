import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

import { ConfigError } from '../errors.js';
import { SettlingCluster } from './settling-cluster.js';

/**
 * One Redis, or a Redis Cluster: everything in embedq takes a `RedisClient` and works on both.
 * On a cluster every key embedq and BullMQ write starts with the hash-tag prefix (`{embedq}`),
 * so all of them live in one slot: multi-key Lua scripts, MULTI and pipelines stay legal.
 */
export type RedisClient = Redis | Cluster;

/** Where Redis is: one server by URL, or the seed nodes of a cluster (the rest are discovered). */
export type RedisTarget = { url: string; clusterNodes?: undefined } | { url?: string; clusterNodes: readonly string[] };

/** Options for one connection, whichever kind; they apply to every node of a cluster. */
export interface ConnectionOptions {
  /** `null` (the default) queues commands through reconnects, as BullMQ workers require. */
  maxRetriesPerRequest?: number | null;
  connectTimeout?: number;
  /**
   * How long one command waits for its answer before it fails with "Command timed out" (Default:
   * forever). A Redis that keeps the connection open but answers nothing (stopped, swapping, a
   * network that drops packets) never closes it, so without this a command waits for good.
   */
  commandTimeoutMs?: number;
  /** Reconnection attempts before giving up (Default: forever). */
  maxReconnects?: number;
  /**
   * Commands wait for a connection that is not ready (Default: true); false fails them at once,
   * while Redis is unreachable and before the first connection is ready.
   */
  offlineQueue?: boolean;
}

/** A seed node `host:port` or `redis[s]://[user:password@]host:port`, as a URL. */
export function parseNodeUrl(node: string): URL {
  const text = /^[a-z]+:\/\//i.test(node) ? node : `redis://${node}`;
  // Messages name the node with its password masked: they end up in container and CI logs.
  const named = maskRedisUrl(node);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`${named}: not a URL; ${PERCENT_ENCODE_ADVICE}`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error(`${named}: must be host:port, redis:// or rediss://`);
  if (!url.hostname || !url.port) throw new Error(`${named}: needs a host and a port`);
  return url;
}

const PERCENT_ENCODE_ADVICE = 'percent-encode "/", "#", "?", "@" and "%" in a user name or password (%2F, %23, %3F, %40, %25)';

/**
 * Why `url` is not a Redis URL embedq reads, or undefined: ioredis cannot read it (it failed with
 * INTERNAL "Invalid URL"), or it has more after the host and port than a database number.
 */
export function redisUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
    // ioredis decodes both: "%zz" failed as INTERNAL "URI malformed".
    decodeURIComponent(parsed.username);
    decodeURIComponent(parsed.password);
  } catch {
    return `${maskRedisUrl(url)} is not a URL; ${PERCENT_ENCODE_ADVICE}`;
  }
  // A password with an unencoded "@" before a "/", "#" or "?" parses as a URL whose host is the
  // password's start and whose path, query or fragment holds the rest and the real host
  // (`redis://:Pw@secrethost/rest@127.0.0.1:6379`): ioredis dialled "secrethost" and the message
  // said ENOTFOUND with it. Only its start and its real host are named here (maskRedisUrl masks to
  // the last "@"), never what follows the host, which may be password.
  if (!/^(\/\d*)?$/.test(parsed.pathname) || parsed.search || parsed.hash) {
    return `${hostPartOf(maskRedisUrl(url))}/… is not a Redis URL embedq reads: after host:port it takes only a database number (/0), no other path, query or fragment; ${PERCENT_ENCODE_ADVICE}`;
  }
  if (!parsed.hostname) return `${maskRedisUrl(url)} names no host`;
  return undefined;
}

/** `redis://user:***@host:6379/anything?more` → `redis://user:***@host:6379`: a masked URL up to its host and port. */
function hostPartOf(maskedUrl: string): string {
  return /^[a-z]+:\/\/([^@]*@)?[^/?#]*/i.exec(maskedUrl)?.[0] ?? maskedUrl.replace(/^([a-z]+:\/\/).*$/i, '$1…');
}

export function createRedisClient(target: RedisTarget, options: ConnectionOptions = {}): RedisClient {
  const { maxReconnects } = options;
  const retry = (times: number): number | null => (maxReconnects !== undefined && times > maxReconnects ? null : Math.min(300 * times, 2_000));
  const common: RedisOptions = {
    maxRetriesPerRequest: options.maxRetriesPerRequest === undefined ? null : options.maxRetriesPerRequest,
    ...(options.connectTimeout ? { connectTimeout: options.connectTimeout } : {}),
    ...(options.commandTimeoutMs ? { commandTimeout: options.commandTimeoutMs } : {}),
    ...(options.offlineQueue === false ? { enableOfflineQueue: false } : {}),
  };
  let client: RedisClient;
  if (target.clusterNodes) {
    const seeds = target.clusterNodes.map(parseNodeUrl);
    const first = seeds[0]!;
    const clusterOptions: ClusterOptions = {
      // Every node shares the seeds' credentials and TLS; the cluster tells us the other nodes.
      redisOptions: {
        ...common,
        ...(first.username ? { username: decodeURIComponent(first.username) } : {}),
        ...(first.password ? { password: decodeURIComponent(first.password) } : {}),
        ...(first.protocol === 'rediss:' ? { tls: {} } : {}),
      },
      clusterRetryStrategy: retry,
      // ioredis learns where the slots are only from a MOVED or a dropped connection. A master that
      // stops answering (frozen, paused, a host gone without a reset) sends neither: after its
      // replica took over, every command on its socket (BullMQ's blocking fetch, the liveness read,
      // `submit --wait`'s reads) waited until it came back (a 41.5 s freeze). Asking for the slots
      // every few seconds drops the old master from the pool, and its pending commands go to the new one.
      slotsRefreshInterval: CLUSTER_SLOTS_REFRESH_MS,
      ...(options.offlineQueue === false ? { enableOfflineQueue: false } : {}),
      // TLS certificates name the host we dialled, not the IP the cluster announces (ElastiCache).
      ...(first.protocol === 'rediss:' ? { dnsLookup: (address: string, callback: (error: null, address: string) => void) => callback(null, address) } : {}),
    };
    // A Cluster whose connect() settles: BullMQ's Workers await it to revive their blocking connection.
    client = new SettlingCluster(
      seeds.map((seed) => ({ host: seed.hostname, port: Number(seed.port) })),
      clusterOptions,
    );
  } else {
    client = new Redis(target.url, { ...common, ...(maxReconnects !== undefined ? { retryStrategy: retry } : {}) });
  }
  // ioredis reconnects by itself; without a listener an error event would crash the process.
  client.on('error', () => undefined);
  return client;
}

/**
 * How often a cluster client asks for the slots' masters (CLUSTER SLOTS, a cheap read). A worker
 * has a client per queue for BullMQ's blocking fetches besides its own (~14), so ~3 a second.
 */
const CLUSTER_SLOTS_REFRESH_MS = 5_000;

/**
 * A read answered by the Redis that holds the deployment's keys: on a cluster, the master of the
 * prefix's slot. A PING goes to any node, which answers it while that slot is down (CLUSTERDOWN) or
 * its master frozen: /healthz said healthy through a whole cluster outage.
 */
export function readPrefixSlot(client: RedisClient, prefix: string): Promise<unknown> {
  return client.exists(`${prefix}:liveness`);
}

/**
 * Whether ioredis failed a command because Redis could not be reached (a connection with bounded
 * retries gave up on it, one without an offline queue was not connected, or one with a command
 * timeout got no answer in time), not because Redis refused it.
 */
export function isRedisUnreachableError(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error.name === 'MaxRetriesPerRequestError' ||
      error.message === 'Connection is closed.' ||
      error.message === 'Command timed out' ||
      error.message.endsWith('enableOfflineQueue options is false') ||
      CLUSTER_UNAVAILABLE.test(error.message) ||
      // A cluster none of whose seeds answers (ioredis's error has no socket code), unless one refused the credentials.
      (error.name === 'ClusterAllFailedError' && !isRedisAuthError(error)))
  );
}

/**
 * How a cluster command fails while the deployment's slot has no master that serves it: a master
 * failing over, a cluster that lost one (CLUSTERDOWN, TRYAGAIN), or MOVED to a node that is gone.
 * ioredis retries them (16 redirections, ~1.6 s), then fails with "Too many Cluster redirections.
 * Last error: …": `submit --wait` and `status` exited with INTERNAL seconds into a failover, the
 * dashboard answered 500, and workers logged a stack for each. "None of startup nodes is available"
 * is how a cluster client that reconnected to no node (all down, or all refusing a rotated password)
 * fails its commands, BullMQ's fetches among them: each queue of a worker logged it with its stack,
 * 40–110 lines a second.
 */
const CLUSTER_UNAVAILABLE = /^(Too many Cluster redirections|CLUSTERDOWN|TRYAGAIN|None of startup nodes is available)\b/;

/** How a socket to a Redis that is down, or not reachable, fails. */
const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * Whether an error a Redis connection reported (its `error` event, a queue's or worker's) says
 * Redis cannot be reached: a socket error, or a command given up for that reason.
 */
export function isRedisConnectionError(error: unknown): boolean {
  return (
    (error instanceof Error && CONNECTION_ERROR_CODES.has((error as NodeJS.ErrnoException).code ?? '')) ||
    isRedisUnreachableError(error)
  );
}

/**
 * Whether Redis refused the connection's credentials (a wrong password or user, a disabled ACL
 * user): an answer, not an outage, and no retry mends it.
 */
export function isRedisAuthError(error: unknown): error is Error {
  return redisAuthRefusal(error) !== undefined;
}

/**
 * Redis's own refusal in `error`: the error itself, or on a cluster the last node's answer, which
 * ioredis wraps ("Failed to refresh slots cache."): a wrong cluster password said REDIS_UNAVAILABLE
 * and exit 1, and the worker and the dashboard started and waited for good.
 */
export function redisAuthRefusal(error: unknown): Error | undefined {
  const refused = (candidate: unknown): candidate is Error => candidate instanceof Error && /^(WRONGPASS|NOAUTH|NOPERM)\b/.test(candidate.message);
  if (refused(error)) return error;
  const last = error instanceof Error && error.name === 'ClusterAllFailedError' ? (error as { lastNodeError?: unknown }).lastNodeError : undefined;
  return refused(last) ? last : undefined;
}

/**
 * Refuses (ConfigError) credentials Redis turned down, and a database number it does not have
 * (missingDatabaseProblem), by a PING and a SELECT within `waitMs`; a Redis that does
 * not answer in time passes (it may come up later: workers wait for it). A command said "no answer
 * within 5 s" to a wrong password Redis had refused at once, and a worker retried it forever,
 * logging a stack several times a second. On a connection of its own, opened and closed here, so
 * the process's queues never meet the refusal (each logged it with its stack). Cluster seeds that
 * are a Redis without cluster mode are refused first: a cluster client never gets an answer there.
 */
export async function assertRedisAccepts(target: RedisTarget, waitMs: number): Promise<void> {
  const notCluster = await standaloneSeedProblem(target);
  if (notCluster) throw notCluster;
  const probe = createRedisClient(target, { maxRetriesPerRequest: 1 });
  // A cluster client fails the PING with "None of startup nodes is available"; the seeds' refusal
  // comes only as an `error` event.
  let refusedAtConnect: Error | undefined;
  probe.on('error', (error: unknown) => (refusedAtConnect ??= redisAuthRefusal(error)));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs)));
  try {
    const answer = await Promise.race([probe.ping().then(() => 'answered' as const, (error: unknown) => error), late]);
    const refusal = redisAuthRefusal(answer) ?? refusedAtConnect;
    if (refusal) throw credentialsRefused(describeRedisTarget(target), refusal);
    if (answer !== 'answered') return;
    const missing = await Promise.race([missingDatabaseProblem(probe, target), late]);
    if (missing) throw missing;
  } finally {
    clearTimeout(timer);
    probe.disconnect();
  }
}

/**
 * The ConfigError of a `REDIS_URL` database number this Redis does not have (`/16` where it has
 * the default 16, numbered 0 to 15), found by selecting it on `client`, a connection to `target`
 * that answers; undefined when it has it, for a cluster (no databases), or when the SELECT fails
 * otherwise (an outage is other checks' concern). ioredis's own SELECT at connect fails only as an
 * `error` event and leaves the connection in database 0: commands listed and submitted there, and
 * workers ran database 0's jobs, after a few `ERR DB index is out of range` stacks.
 */
export async function missingDatabaseProblem(client: RedisClient, target: RedisTarget): Promise<ConfigError | undefined> {
  const database = target.url === undefined ? 0 : databaseOf(target.url);
  if (database === 0) return undefined;
  const refusal = await client.select(database).then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(refusal instanceof Error) || !/DB index is out of range/i.test(refusal.message)) return undefined;
  return new ConfigError(
    `Redis at ${describeRedisTarget(target)} has no database ${database} (${refusal.message}); its "databases" setting (16 by default) is how many it has, numbered from 0`,
  );
}

/** The database number of a Redis URL (`redis://host:6379/3` → 3); 0 when it names none. */
function databaseOf(url: string): number {
  try {
    return Number(/^\/(\d+)$/.exec(new URL(url).pathname)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * For a cluster target with a seed that answers as a Redis without cluster mode
 * (`cluster_enabled:0`), the ConfigError that says so; ioredis only says it failed to refresh the
 * slots cache, and a command said "no answer" from a Redis that had answered. Every seed is asked
 * until one answers (one down first hid a plain Redis after it). Undefined otherwise (not a cluster
 * target, no seed answering, or a cluster indeed).
 */
export async function standaloneSeedProblem(target: RedisTarget, waitMs = 2_000): Promise<ConfigError | undefined> {
  for (const node of target.clusterNodes ?? []) {
    const seed = parseNodeUrl(node);
    const clusterEnabled = await clusterEnabledOf(seed, waitMs);
    if (clusterEnabled === undefined) continue;
    if (clusterEnabled) return undefined;
    return new ConfigError(
      `REDIS_CLUSTER_NODES names ${maskRedisUrl(seed.href)}, a Redis without cluster mode (cluster_enabled:0); give one Redis as REDIS_URL, or the nodes of a Redis Cluster`,
    );
  }
  return undefined;
}

/** Whether the Redis at `seed` runs in cluster mode, or undefined when it does not answer within `waitMs`. */
async function clusterEnabledOf(seed: URL, waitMs: number): Promise<boolean | undefined> {
  const probe = new Redis(seed.href, { maxRetriesPerRequest: 1, connectTimeout: waitMs, retryStrategy: () => null, lazyConnect: true });
  probe.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    const info = await Promise.race([
      probe.connect().then(() => probe.info('cluster')),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs))),
    ]).catch(() => undefined);
    if (info === undefined) return undefined;
    return !/^cluster_enabled:0\b/m.test(info);
  } finally {
    clearTimeout(timer);
    probe.disconnect();
  }
}

/** The ConfigError of credentials Redis refused (`error`: redisAuthRefusal's; `target`: describeRedisTarget's, password masked). */
export function credentialsRefused(target: string, error: Error): ConfigError {
  return new ConfigError(`Redis at ${target} refused the credentials (${error.message}); check the user and password there`);
}

/**
 * `redis://user:secret@host:6379/0?password=secret` → `redis://user:***@host:6379/0?password=***`,
 * for messages. Query parameters named like a secret go too: ioredis reads every parameter of a URL
 * as an option, so `redis://host:6379/?password=secret` authenticates as `redis://:secret@host` does.
 */
export function maskRedisUrl(url: string): string {
  // As written, not parsed: a password with an unescaped "/" or "#" is no URL, and must not show
  // either. Everything from the first ":" after the user name to the last "@" goes.
  return url
    .replace(/^([a-z]+:\/\/)([^:@]*)(:.*)?@/i, (_match, scheme: string, user: string, secret?: string) => `${scheme}${user}${secret ? ':***' : ''}@`)
    .replace(/([?&][^=&#]*(?:pass|secret|token)[^=&#]*=)[^&#]*/gi, '$1***');
}

/** Names the setting in use, passwords masked: `REDIS_URL=…` or `REDIS_CLUSTER_NODES=…`. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.clusterNodes) return `REDIS_CLUSTER_NODES=${target.clusterNodes.map(maskRedisUrl).join(',')}`;
  return `REDIS_URL=${maskRedisUrl(target.url)}`;
}

/** The hash tag of a key prefix (`{embedq}` → `embedq`), as Redis Cluster hashes it; undefined if none. */
export function hashTagOf(prefix: string): string | undefined {
  const open = prefix.indexOf('{');
  if (open < 0) return undefined;
  const close = prefix.indexOf('}', open + 1);
  return close > open + 1 ? prefix.slice(open + 1, close) : undefined;
}
