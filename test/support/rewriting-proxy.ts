import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A reverse proxy in front of `targetUrl` (the emulator) that passes each answer's body through
 * `rewrite` (`index` counts answers from 0), as a broken gateway or a faulty upstream might change
 * it. Asks the upstream for uncompressed bodies so the rewrite sees text.
 */
export async function startRewritingProxy(targetUrl: string, rewrite: (body: string, index: number) => string): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(targetUrl);
  let answers = 0;
  const server: Server = createServer((incoming, outgoing) => {
    const headers = { ...incoming.headers, 'accept-encoding': 'identity' };
    const upstream = httpRequest({ host: target.hostname, port: target.port, path: incoming.url, method: incoming.method, headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', () => {
        const body = Buffer.from(rewrite(Buffer.concat(chunks).toString('utf8'), answers++));
        outgoing.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'content-length': String(body.length) });
        outgoing.end(body);
      });
    });
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
