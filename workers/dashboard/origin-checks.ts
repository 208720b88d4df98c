import type { FastifyInstance } from 'fastify';

import { isLoopbackHost } from './auth.js';

/** Methods that change nothing; any other must come from the dashboard's own page, or from no page. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Refuses what a web page elsewhere makes the operator's browser send:
 * - a state-changing request (cancel, retry, login) whose `Origin`, or lacking one its `Referer`,
 *   names another site: a form or `fetch` on any page could cancel jobs. Scripts such as curl send
 *   neither and pass.
 * - with `loopbackHostOnly` (no token, so a loopback listener), a `Host` that is not a loopback
 *   name: a page whose domain was rebound to 127.0.0.1 sends its own name, and could otherwise read
 *   the API as its own origin.
 */
export function registerOriginChecks(app: FastifyInstance, options: { loopbackHostOnly: boolean }): void {
  app.addHook('onRequest', async (request, reply) => {
    const host = request.headers.host ?? '';
    if (options.loopbackHostOnly && !isLoopbackHost(hostnameOf(host))) {
      return reply.code(403).send({ error: `refused Host ${host}: without EMBEDQ_DASHBOARD_TOKEN the dashboard answers only to localhost, 127.0.0.1 or [::1]` });
    }
    if (SAFE_METHODS.has(request.method)) return;
    const from = request.headers.origin ?? request.headers.referer;
    if (from !== undefined && !isSameHost(from, host)) {
      return reply.code(403).send({ error: `refused a cross-site ${request.method} from ${from}` });
    }
  });
}

function hostnameOf(host: string): string {
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return '';
  }
}

/**
 * Host and port only: behind a proxy that ends TLS the browser says https while the dashboard
 * serves http. `Origin: null` (a sandboxed frame, a redirect across sites) is never the same.
 */
function isSameHost(from: string, host: string): boolean {
  try {
    const origin = new URL(from);
    return origin.host === new URL(`${origin.protocol}//${host}`).host;
  } catch {
    return false;
  }
}
