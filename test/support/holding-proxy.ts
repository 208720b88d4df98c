import { type ClientRequest, createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request the proxy holds: its body kept from the server, and no answer, until `release`. */
export interface HeldRequest {
  method: string;
  url: string;
  /** When the client went away (it gave up or was aborted), if it did. */
  clientGoneAt: number | undefined;
}

/**
 * A reverse proxy in front of `targetUrl` (s3rver) that holds the first `times` requests `hold`
 * picks, as a stuck network path to S3 would: it takes their bodies but passes them on only at
 * `release()`, and only for clients still there (S3 stores nothing of a request whose client went
 * away before its body came whole). Every other request passes through as it is.
 */
export async function startHoldingProxy(
  targetUrl: string,
  hold: (request: { method: string; url: string }) => boolean,
  times = 1,
): Promise<{ url: string; held: HeldRequest[]; release(): void; close(): Promise<void> }> {
  const target = new URL(targetUrl);
  const held: HeldRequest[] = [];
  const waiting: Array<{ entry: HeldRequest; forward: () => void }> = [];
  const server: Server = createServer((incoming, outgoing) => {
    const upstream = (): ClientRequest => {
      const request = httpRequest({ host: target.hostname, port: target.port, path: incoming.url, method: incoming.method, headers: incoming.headers }, (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      });
      request.on('error', () => outgoing.destroy());
      return request;
    };
    const asked = { method: incoming.method ?? '', url: incoming.url ?? '' };
    if (held.length >= times || !hold(asked)) {
      incoming.pipe(upstream());
      return;
    }
    const entry: HeldRequest = { ...asked, clientGoneAt: undefined };
    held.push(entry);
    const body: Buffer[] = [];
    const ended = new Promise((resolve) => incoming.on('end', resolve));
    incoming.on('data', (chunk: Buffer) => body.push(chunk));
    incoming.socket.once('close', () => (entry.clientGoneAt ??= Date.now()));
    waiting.push({ entry, forward: () => void ended.then(() => upstream().end(Buffer.concat(body))) });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    held,
    release() {
      for (const { entry, forward } of waiting.splice(0)) if (entry.clientGoneAt === undefined) forward();
    },
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
