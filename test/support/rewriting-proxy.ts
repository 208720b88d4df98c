import { createServer, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the proxy sends back in place of an upstream answer. */
export interface RewrittenAnswer {
  body: Buffer;
  /** Headers set on top of the upstream's (Content-Length is always the new body's). */
  headers?: OutgoingHttpHeaders;
}

/**
 * A reverse proxy in front of `targetUrl` (the emulator, or s3rver) that passes each answer's
 * body through `rewrite` (`index` counts answers from 0; `request.url` is the path and query
 * asked), as a broken gateway, a faulty upstream, a compressing one or a server with a feature
 * the local one lacks might change it, and keeps the request headers it saw. Asks the upstream
 * for uncompressed bodies so the rewrite sees them as sent.
 */
export async function startRewritingProxy(
  targetUrl: string,
  rewrite: (body: Buffer, index: number, request: { url: string }) => RewrittenAnswer,
): Promise<{ url: string; seen: IncomingHttpHeaders[]; close(): Promise<void> }> {
  const target = new URL(targetUrl);
  const seen: IncomingHttpHeaders[] = [];
  let answers = 0;
  const server: Server = createServer((incoming, outgoing) => {
    seen.push(incoming.headers);
    const headers = { ...incoming.headers, 'accept-encoding': 'identity' };
    const upstream = httpRequest({ host: target.hostname, port: target.port, path: incoming.url, method: incoming.method, headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', () => {
        const rewritten = rewrite(Buffer.concat(chunks), answers++, { url: incoming.url ?? '' });
        outgoing.writeHead(answer.statusCode ?? 502, { ...answer.headers, ...rewritten.headers, 'content-length': String(rewritten.body.length) });
        outgoing.end(rewritten.body);
      });
    });
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A rewrite of the body's text only. */
export function rewriteText(rewrite: (body: string, index: number) => string): (body: Buffer, index: number) => RewrittenAnswer {
  return (body, index) => ({ body: Buffer.from(rewrite(body.toString('utf8'), index)) });
}
