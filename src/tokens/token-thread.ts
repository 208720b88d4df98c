import { parentPort } from 'node:worker_threads';

import { lowerThisThreadPriority } from '../threads/background-priority.js';
import { loadTokenizer } from './count-tokens.js';
import { fitToTokenLimit, type TokenFit } from './fit-tokens.js';

/** A request to the token thread. */
export interface TokenThreadRequest {
  id: number;
  text: string;
  maxTokens: number;
}

export type TokenThreadResponse = { id: number; fit: TokenFit } | { id: number; error: { message: string; stack?: string } };

// Loading the tokenizer (~0.7 s, ~250 MB) and counting long lines (seconds for a 200,000-character
// line) happen here, off the worker's event loop and at a lower CPU priority, so BullMQ keeps
// renewing job locks and requests leave on their slots meanwhile.
if (parentPort) lowerThisThreadPriority();
parentPort?.on('message', (request: TokenThreadRequest) => {
  void (async () => {
    try {
      const tokenizer = await loadTokenizer();
      parentPort!.postMessage({ id: request.id, fit: fitToTokenLimit(tokenizer, request.text, request.maxTokens) } satisfies TokenThreadResponse);
    } catch (error) {
      const { message, stack } = error instanceof Error ? error : new Error(String(error));
      parentPort!.postMessage({ id: request.id, error: { message, stack } } satisfies TokenThreadResponse);
    }
  })();
});
