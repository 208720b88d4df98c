import { Cluster, type ClusterNode, type ClusterOptions } from 'ioredis';

/** ioredis's and BullMQ's message for a connection that closed: BullMQ retries it without emitting an error. */
const CONNECTION_CLOSED = 'Connection is closed.';

/**
 * How long an attempt may stay connecting before it is given up and started over. ioredis bounds
 * its slots refresh (1 s a node) but not the ready check's CLUSTER INFO, which has no timeout
 * without a commandTimeout (workers have none): sent to a master that froze with its sockets open,
 * it never answered, and the attempt stayed in `connect` for good (a BullMQ Worker's blocking client
 * among them, so that queue never fetched again).
 */
export const CONNECT_ATTEMPT_TIMEOUT_MS = 10_000;

/**
 * An ioredis Cluster whose `connect()` always settles. In ioredis 5.11 (cluster/index.js, connect's
 * `refreshListener`) an attempt whose slots refresh succeeded but whose ready check (CLUSTER INFO)
 * then failed or answered `cluster_state:fail` (a node still refusing a password being rolled out,
 * a failover under way) disconnects to retry and never settles that attempt's promise: the client
 * itself comes back on its next attempt, but whoever awaited `connect()` waits forever. BullMQ
 * awaits it when it revives a Worker's blocking connection after an error (Worker.waitForJob →
 * reconnectBlocking → RedisConnection.reconnect): that Worker never fetched a job again, while the
 * process's other Workers, its heartbeat and "Redis is reachable again" looked healthy.
 *
 * Here `connect()` also settles when the client becomes ready by any attempt, and rejects (as a
 * closed connection, which BullMQ waits a little and retries) when the client closes or ends first,
 * or when the attempt is still connecting after CONNECT_ATTEMPT_TIMEOUT_MS (then it starts over).
 */
export class SettlingCluster extends Cluster {
  constructor(
    /** The seeds as given (ioredis keeps its copy private): a duplicate dials them too. */
    private readonly seeds: ClusterNode[],
    options: ClusterOptions = {},
  ) {
    super(seeds, options);
  }

  override connect(): Promise<void> {
    const attempt = super.connect();
    return new Promise<void>((resolve, reject) => {
      const stalled = setTimeout(() => {
        done();
        reject(new Error(CONNECTION_CLOSED));
        // ioredis starts over by its clusterRetryStrategy, as after a failed ready check.
        if (this.status === 'connecting' || this.status === 'connect') this.disconnect(true);
      }, CONNECT_ATTEMPT_TIMEOUT_MS);
      // A command done with the cluster exits without waiting for it.
      stalled.unref();
      const done = (): void => {
        clearTimeout(stalled);
        this.off('ready', onReady);
        this.off('close', onClosed);
        this.off('end', onClosed);
      };
      const onReady = (): void => {
        done();
        resolve();
      };
      const onClosed = (): void => {
        done();
        reject(new Error(CONNECTION_CLOSED));
      };
      this.once('ready', onReady);
      this.once('close', onClosed);
      this.once('end', onClosed);
      attempt.then(onReady, (error: unknown) => {
        done();
        reject(error as Error);
      });
    });
  }

  /** A copy that settles too (BullMQ's blocking connection of each Worker is one); ioredis's makes a plain Cluster. */
  override duplicate(overrideStartupNodes: ClusterNode[] = [], overrideOptions: ClusterOptions = {}): SettlingCluster {
    return new SettlingCluster(overrideStartupNodes.length > 0 ? overrideStartupNodes : this.seeds.slice(0), { ...this.options, ...overrideOptions });
  }
}
