import type { Readable } from 'node:stream';

/**
 * `source`'s chunks, failing with a `TimeoutError` (and destroying `source`) when one takes longer
 * than `timeoutMs` to come. Only the wait for a chunk counts, not the time the reader spends
 * between chunks: a split that waits minutes for room stops reading, and must not be cut for it. A
 * stalled body (a server or proxy that stops sending mid-object) held a split for minutes without
 * a word.
 */
export async function* failStalledReads(source: Readable, timeoutMs: number): AsyncGenerator<Buffer> {
  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = iterator.next();
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<'stalled'>((resolve) => {
        timer = setTimeout(() => resolve('stalled'), timeoutMs);
      });
      const first = await Promise.race([next, stalled]).finally(() => clearTimeout(timer));
      if (first === 'stalled') {
        // Settles once the stream is destroyed below; nothing waits for it any more.
        next.catch(() => undefined);
        throw Object.assign(new Error(`no bytes came for ${timeoutMs} ms`), { name: 'TimeoutError' });
      }
      if (first.done) return;
      yield first.value as Buffer;
    }
  } finally {
    // Frees the socket however the read ends: a stall, an error, a reader that stopped early.
    source.destroy();
  }
}
