import type { Dispatcher } from 'undici';

import type { BodyBuffers } from './body-buffers.js';

/** A response whose body lies in a pooled buffer: read `bytes`, then call `release` once. */
export interface PooledResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** The body, valid until `release`. */
  bytes: Uint8Array;
  release(): void;
}

/** Says where a transport failure happened, so the caller's message can tell the two apart. */
export class TransportError extends Error {
  constructor(
    readonly stage: 'request' | 'response body',
    cause: unknown,
  ) {
    super(`${stage} failed`, { cause });
  }
}

/**
 * One POST through an undici dispatcher, its body read straight into a pooled buffer (sized by
 * Content-Length, grown when there is none). undici's `request` builds a Readable stream per
 * response and `arrayBuffer()` concatenates its chunks into a fresh copy; at ~260 KB a response
 * that stream machinery and garbage was a fifth of a worker's CPU (README, "Worker cost").
 *
 * The signal aborts the request at any point. Every failure, an abort included (its reason is the
 * cause), rejects with a TransportError naming the stage: request, or response body.
 */
export function postJson(dispatcher: Dispatcher, url: URL, headers: Record<string, string>, body: string, signal: AbortSignal, buffers: BodyBuffers): Promise<PooledResponse> {
  return new Promise((resolve, reject) => {
    let abortRequest: ((reason?: Error) => void) | undefined;
    let buffer: Buffer | undefined;
    let length = 0;
    let status = 0;
    let responseHeaders: Record<string, string> = {};
    let settled = false;
    const finish = (error: unknown, response?: PooledResponse): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (response) resolve(response);
      else {
        if (buffer) buffers.release(buffer);
        buffer = undefined;
        reject(error);
      }
    };
    const stage = (): TransportError['stage'] => (status === 0 ? 'request' : 'response body');
    const onAbort = (): void => {
      const reason = signal.reason as Error;
      abortRequest?.(reason);
      finish(new TransportError(stage(), reason));
    };
    if (signal.aborted) {
      reject(new TransportError('request', signal.reason));
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });

    const handler: Dispatcher.DispatchHandlers = {
      onConnect(abort) {
        if (settled) abort(signal.reason as Error);
        else abortRequest = abort;
      },
      onHeaders(statusCode, rawHeaders) {
        if (statusCode < 200) return true; // 1xx: the real answer follows
        status = statusCode;
        responseHeaders = parseRawHeaders(rawHeaders);
        const declared = Number(responseHeaders['content-length']);
        buffer = buffers.take(Number.isSafeInteger(declared) && declared >= 0 ? declared : 0);
        length = 0;
        return true;
      },
      onData(chunk) {
        if (settled || !buffer) return true;
        if (length + chunk.length > buffer.length) {
          const grown = buffers.take(Math.max(buffer.length * 2, length + chunk.length));
          buffer.copy(grown, 0, 0, length);
          buffers.release(buffer);
          buffer = grown;
        }
        chunk.copy(buffer, length);
        length += chunk.length;
        return true;
      },
      onComplete() {
        const bytes = buffer ?? Buffer.alloc(0);
        const held = buffer;
        let released = false;
        const release = (): void => {
          if (released || !held) return;
          released = true;
          buffers.release(held);
        };
        buffer = undefined;
        finish(undefined, { status, headers: responseHeaders, bytes: bytes.subarray(0, length), release });
      },
      onError(error) {
        finish(new TransportError(stage(), error));
      },
    };
    try {
      dispatcher.dispatch({ origin: url.origin, path: `${url.pathname}${url.search}`, method: 'POST', headers, body }, handler);
    } catch (error) {
      finish(new TransportError('request', error));
    }
  });
}

/** undici's raw `[name, value, …]` header buffers as a lower-case record, as `request` gives them. */
function parseRawHeaders(raw: Buffer[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = raw[index]!.toString('latin1').toLowerCase();
    const value = raw[index + 1]!.toString('utf8');
    const previous = headers[name];
    headers[name] = previous === undefined ? value : `${previous}, ${value}`;
  }
  return headers;
}
