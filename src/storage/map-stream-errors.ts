import { Readable } from 'node:stream';

/**
 * Re-emits `source`'s bytes, passing each error it emits through `mapError` (so a connection reset
 * in the middle of an object surfaces as a StorageUnavailableError, not a bare `ECONNRESET`).
 * Destroying the returned stream destroys `source`: Readable.from ends the generator, whose
 * `for await` destroys what it iterates, so abandoning a read frees the socket or file handle.
 */
export function mapStreamErrors(source: AsyncIterable<unknown>, mapError: (error: unknown) => Error): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of source) yield chunk as Buffer;
    } catch (error) {
      throw mapError(error);
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}
