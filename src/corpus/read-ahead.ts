import { Readable } from 'node:stream';

import { EmbedqError, StorageUnavailableError } from '../errors.js';
import type { OpenedObject } from '../storage/object-store.js';
import type { CorpusObject } from './list-corpus.js';

/**
 * How far ahead small objects are fetched. 16 GETs of at most 256 KiB: at most 4 MiB held per split
 * (a worker runs up to four), and at S3's 20–50 ms a GET, 300–800 small objects a second instead
 * of 20–50. An object over 256 KiB holds a thousand lines or more, seconds of requests at the
 * quota, beside which its GET's latency no longer counts.
 */
export const READ_AHEAD = { depth: 16, maxObjectBytes: 256 * 1024 };

/**
 * The corpus objects in the same order, the small ones already being fetched whole, up to `depth`
 * ahead of the reader. A corpus of many small objects (a document per file) was read one GET at a
 * time, and the latency of each GET, not the quota, set the pace. Objects over `maxObjectBytes`
 * are streamed when their turn comes, as before: a body left unread for minutes behind a large
 * object would be cut by the server.
 *
 * Each object's version is the one its fetch saw, so the split's pins check the bytes it reads. A
 * failed fetch throws when the reader reaches that object (readCorpusLines awaits `opened`).
 * `wanted(index)` false: the reader will not read that object (a split that starts again steps
 * over objects already in written shards), so it is not fetched.
 */
export async function* readAhead(
  objects: AsyncIterable<CorpusObject>,
  options = READ_AHEAD,
  wanted: (index: number) => boolean = () => true,
): AsyncGenerator<CorpusObject> {
  const listing = objects[Symbol.asyncIterator]();
  const ahead: CorpusObject[] = [];
  let listed = false;
  let index = 0;
  try {
    for (;;) {
      while (!listed && ahead.length < options.depth) {
        const next = await listing.next();
        if (next.done) {
          listed = true;
          continue;
        }
        const fetch = next.value.sizeBytes <= options.maxObjectBytes && wanted(index);
        index += 1;
        ahead.push(fetch ? { ...next.value, opened: fetchWhole(next.value, options.maxObjectBytes) } : next.value);
      }
      const object = ahead.shift();
      if (!object) return;
      yield object;
    }
  } finally {
    await listing.return?.();
  }
}

/**
 * The object's body read whole, if it is no larger than `maxBytes`. Its listed size may be minutes
 * old (a page lists a thousand keys): an object rewritten larger since is not buffered whole, but
 * handed on as a stream of what was read so far and the rest of the same GET.
 */
function fetchWhole(object: CorpusObject, maxBytes: number): Promise<OpenedObject> {
  const fetched = (async () => {
    const { body, version } = await object.store.open(object.key);
    try {
      const chunks = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      const read: Buffer[] = [];
      let bytes = 0;
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
        read.push(next.value);
        bytes += next.value.length;
        if (bytes > maxBytes) return { body: Readable.from(readThenRest(read, chunks, body)), version };
      }
      return { body: Readable.from([Buffer.concat(read)]), version };
    } catch (error) {
      if (error instanceof EmbedqError) throw error;
      throw new StorageUnavailableError(`read ${object.source}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  })();
  // Until the reader gets here, a failure is only noted; the reader then sees it (or never does,
  // when the split stops first).
  fetched.catch(() => undefined);
  return fetched;
}

/** The chunks read, then the rest of the body; destroying the result destroys the body. */
async function* readThenRest(read: Buffer[], rest: AsyncIterator<Buffer>, body: Readable): AsyncGenerator<Buffer> {
  try {
    yield* read;
    for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
  } finally {
    body.destroy();
  }
}
