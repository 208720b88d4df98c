/**
 * Passes `chunks` through, counting their bytes and keeping the error they end in, if any: a
 * store that writes a stream must rethrow its producer's error as it is (say, a shard that could
 * not be encoded), not classify it as a storage failure.
 */
export class CountedChunks {
  bytes = 0;
  /** Set when the producer failed; undefined when the failure, if any, was the store's own. */
  failure: { error: unknown } | undefined;

  constructor(private readonly chunks: AsyncIterable<Uint8Array>) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of this.chunks) {
        this.bytes += chunk.byteLength;
        yield chunk;
      }
    } catch (error) {
      this.failure = { error };
      throw error;
    }
  }
}
