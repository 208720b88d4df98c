import type { Worker } from 'node:worker_threads';

import { startThread } from '../threads/start-thread.js';
import type { TokenFit } from './fit-tokens.js';
import type { TokenThreadRequest, TokenThreadResponse } from './token-thread.js';

/** An idle token thread ends after this long, giving back the tokenizer's ~250 MB. */
const IDLE_EXIT_MS = 30_000;

/**
 * Exact token counts of long texts on a background thread (token-thread.ts). Lines that might
 * exceed the limit are rare, so the thread starts on first use and ends when idle; it is unref'd
 * and never keeps a process alive.
 */
class TokenWorker {
  private worker: Worker | undefined;
  private nextId = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Map<number, { resolve: (fit: TokenFit) => void; reject: (error: Error) => void }>();

  /** {@link fitToTokenLimit} on the thread: the text cut to `maxTokens` tokens if it had more. */
  fit(text: string, maxTokens: number): Promise<TokenFit> {
    const worker = this.thread();
    clearTimeout(this.idleTimer);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, text, maxTokens } satisfies TokenThreadRequest);
    });
  }

  async close(): Promise<void> {
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = startThread(new URL('./token-thread.js', import.meta.url), new URL('./token-thread.ts', import.meta.url));
    worker.unref();
    worker.on('message', (response: TokenThreadResponse) => {
      const waiter = this.pending.get(response.id);
      if (!waiter) return;
      this.pending.delete(response.id);
      if (this.pending.size === 0) {
        worker.unref();
        this.idleTimer = setTimeout(() => void this.close(), IDLE_EXIT_MS).unref();
      }
      if ('error' in response) waiter.reject(new Error(`token counting failed: ${response.error.message}`));
      else waiter.resolve(response.fit);
    });
    worker.on('error', (error) => this.failAll(error));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      if (this.pending.size > 0) this.failAll(new Error(`token thread exited with code ${code}`));
    });
    this.worker = worker;
    return worker;
  }

  private failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}

const shared = new TokenWorker();

/**
 * Counts a text's tokens, and truncates it to `maxTokens` if it has more, without blocking the
 * event loop. Call it only for texts {@link mayExceedTokens} flags; others fit by their byte length.
 */
export function fitTokensOffThread(text: string, maxTokens: number): Promise<TokenFit> {
  return shared.fit(text, maxTokens);
}

/** Ends the token thread now (tests; processes need not: it is unref'd and ends when idle). */
export function closeTokenThread(): Promise<void> {
  return shared.close();
}
