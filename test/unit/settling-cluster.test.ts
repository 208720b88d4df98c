import { Cluster } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { CONNECT_ATTEMPT_TIMEOUT_MS, SettlingCluster } from '../../src/redis/settling-cluster.js';

/** ioredis's attempt after a failed ready check: it retries by itself and never settles this promise. */
const neverSettles = (): Promise<void> => new Promise<void>(() => undefined);

const lazyCluster = (): SettlingCluster => new SettlingCluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true, redisOptions: { password: 'pw' } });

describe('SettlingCluster', () => {
  afterEach(() => vi.restoreAllMocks());

  it('settles connect() when the client becomes ready by a later attempt of its own', async () => {
    vi.spyOn(Cluster.prototype, 'connect').mockImplementation(neverSettles);
    const cluster = lazyCluster();
    const connecting = cluster.connect();
    cluster.emit('ready');
    await expect(connecting).resolves.toBeUndefined();
    expect(cluster.listenerCount('ready') + cluster.listenerCount('close') + cluster.listenerCount('end')).toBe(0);
  });

  it('rejects connect() as a closed connection (BullMQ retries those quietly) when the client closes first', async () => {
    vi.spyOn(Cluster.prototype, 'connect').mockImplementation(neverSettles);
    const cluster = lazyCluster();
    const connecting = cluster.connect();
    cluster.emit('close');
    await expect(connecting).rejects.toThrow('Connection is closed.');
  });

  describe('an attempt that never settles (fake timers)', () => {
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    /** A client connecting by an attempt of ioredis's that never settles; its disconnect() recorded. */
    const stalledAttempt = () => {
      vi.spyOn(Cluster.prototype, 'connect').mockImplementation(neverSettles);
      const cluster = lazyCluster();
      const disconnect = vi.spyOn(cluster, 'disconnect').mockImplementation(() => undefined);
      return { cluster, disconnect, connecting: cluster.connect() };
    };

    it('is given up after CONNECT_ATTEMPT_TIMEOUT_MS (a ready check sent to a frozen master) and started over', async () => {
      const { cluster, disconnect, connecting } = stalledAttempt();
      const outcome = expect(connecting).rejects.toThrow('Connection is closed.');
      (cluster as unknown as { status: string }).status = 'connect';
      await vi.advanceTimersByTimeAsync(CONNECT_ATTEMPT_TIMEOUT_MS - 1);
      expect(disconnect).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1);
      await outcome;
      expect(disconnect).toHaveBeenCalledWith(true);
      expect(cluster.listenerCount('ready') + cluster.listenerCount('close') + cluster.listenerCount('end')).toBe(0);
    });

    it('leaves the client alone once the client became ready: no late disconnect', async () => {
      const { cluster, disconnect, connecting } = stalledAttempt();
      cluster.emit('ready');
      await connecting;
      await vi.advanceTimersByTimeAsync(CONNECT_ATTEMPT_TIMEOUT_MS * 2);
      expect(disconnect).not.toHaveBeenCalled();
    });
  });

  it("passes on the attempt's own outcome", async () => {
    vi.spyOn(Cluster.prototype, 'connect').mockRejectedValueOnce(new Error('None of startup nodes is available'));
    await expect(lazyCluster().connect()).rejects.toThrow('None of startup nodes is available');
  });

  it('duplicates into a SettlingCluster with the same seeds and options (BullMQ makes its blocking connections so)', () => {
    const copy = lazyCluster().duplicate([], { redisOptions: { password: 'pw', connectionName: 'blocking' } });
    expect(copy).toBeInstanceOf(SettlingCluster);
    expect(copy.options.lazyConnect).toBe(true);
    expect(copy.options.redisOptions).toEqual({ password: 'pw', connectionName: 'blocking' });
    expect(copy.duplicate()).toBeInstanceOf(SettlingCluster);
  });
});
