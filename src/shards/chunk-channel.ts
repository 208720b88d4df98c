/**
 * The file's chunks from the thread to the sink, one at a time: taking a chunk (asking for the
 * next one) tells the thread it may go on.
 */
export class ChunkChannel {
  bytes = 0;
  private readonly queue: Uint8Array[] = [];
  private ended = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly taken: () => void) {}

  put(chunk: Uint8Array): void {
    this.queue.push(chunk);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: Error): void {
    this.error = error;
    this.notify();
  }

  async *chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.error) throw this.error;
      const chunk = this.queue.shift();
      if (chunk) {
        this.bytes += chunk.byteLength;
        yield chunk;
        this.taken();
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
