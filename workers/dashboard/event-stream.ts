import type { Writable } from 'node:stream';

/**
 * One page's server-sent events (`/api/events`). A client can stay connected and stop reading: a
 * laptop asleep behind the port-forward the README suggests, a frozen tab, `curl -N … | less`.
 * Writing it a snapshot a second regardless buffered every one in the dashboard (3.5 GB a day for
 * one such client with 50 jobs listed). While its socket has not drained, only the newest snapshot
 * is kept, and sent once it drains; a client that drains nothing for `stalledMs` is closed.
 */

/** How long a client may leave its socket undrained before it is closed (a page reconnects by itself). */
const STALLED_CLIENT_MS = 60_000;

/** Every client is sent the same snapshot each tick: it is encoded once. */
const encoded = new WeakMap<object, string>();
function encode(snapshot: object): string {
  let event = encoded.get(snapshot);
  if (event === undefined) {
    event = `data: ${JSON.stringify(snapshot)}\n\n`;
    encoded.set(snapshot, event);
  }
  return event;
}

export interface SnapshotStream {
  send(snapshot: object): void;
  /** Stops the stall timer (the client went away). */
  close(): void;
}

export function snapshotStream(out: Writable, stalledMs = STALLED_CLIENT_MS): SnapshotStream {
  let pending: object | undefined;
  let stalled: NodeJS.Timeout | undefined;
  const write = (snapshot: object): void => {
    if (out.write(encode(snapshot))) return;
    stalled = setTimeout(() => out.destroy(), stalledMs);
    stalled.unref();
    out.once('drain', () => {
      clearTimeout(stalled);
      stalled = undefined;
      const next = pending;
      pending = undefined;
      if (next !== undefined && !out.destroyed) write(next);
    });
  };
  return {
    send(snapshot) {
      if (out.destroyed) return;
      if (stalled !== undefined) pending = snapshot;
      else write(snapshot);
    },
    close() {
      clearTimeout(stalled);
    },
  };
}
