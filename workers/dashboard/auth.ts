import { createHmac, timingSafeEqual } from 'node:crypto';

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { loginPage } from './page.js';

export const SESSION_COOKIE = 'embedq_session';
/** Paths reachable without the token: the probes, the login form and the icon browsers ask for beside it. */
const OPEN_PATHS = new Set(['/healthz', '/livez', '/login', '/favicon.ico']);

/** Only loopback hosts may serve without a token. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Where the login form may send the browser back to: a path on this dashboard, else `/`. Browsers
 * read `\` as `/` and drop tabs and newlines in a URL, so `/\evil.example` led off-site where a
 * check for a leading `//` saw a path. The normalized path may start with `//` too (`/.//evil.com`
 * is the path `//evil.com`, which a Location header sends off-site), and a value the URL parser
 * refuses (`//`) answered 500, before the token was checked.
 */
export function loginRedirectPath(next: string | undefined): string {
  if (!next?.startsWith('/') || /[\\\u0000-\u001f\u007f]/.test(next)) return '/';
  const base = new URL('http://dashboard.invalid');
  let url: URL;
  try {
    url = new URL(next, base);
  } catch {
    return '/';
  }
  if (url.origin !== base.origin || url.pathname.startsWith('//')) return '/';
  // The normalized form: percent-encoded, so a Location header can always carry it.
  return `${url.pathname}${url.search}${url.hash}`;
}

const sameSecret = (a: string, b: string): boolean => {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
};

/**
 * With EMBEDQ_DASHBOARD_TOKEN set, every route except /healthz and /login (the page, /api/*,
 * /queues and /metrics) needs `Authorization: Bearer <token>` or the session cookie the login form
 * sets. The cookie holds an HMAC of the token, never the token, so it cannot be replayed as a bearer.
 */
export function registerAuth(app: FastifyInstance, token: string | undefined): void {
  if (!token) return;
  const session = createHmac('sha256', token).update('embedq-dashboard-session').digest('hex');
  const authorized = (request: FastifyRequest): boolean => {
    const header = request.headers.authorization;
    // The scheme's name is case-insensitive (RFC 9110): `bearer` was refused.
    const bearer = /^bearer +(.*)$/i.exec(header ?? '');
    if (bearer && sameSecret(bearer[1]!, token)) return true;
    const cookie = request.cookies[SESSION_COOKIE];
    return cookie !== undefined && sameSecret(cookie, session);
  };
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0] ?? '';
    if (OPEN_PATHS.has(path) || authorized(request)) return;
    const wantsPage = request.method === 'GET' && (request.headers.accept ?? '').includes('text/html');
    // Back to the whole URL after signing in: a Bull Board view's query (`?status=failed`) was dropped.
    if (wantsPage) return reply.code(401).type('text/html; charset=utf-8').send(loginPage(loginRedirectPath(request.url)));
    return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized' });
  });
  app.get('/login', async (_request, reply) => reply.type('text/html; charset=utf-8').send(loginPage('/')));
  app.post<{ Body: { token?: string; next?: string } }>('/login', async (request, reply) => {
    const next = loginRedirectPath(request.body?.next);
    if (!sameSecret(request.body?.token ?? '', token)) return reply.code(401).type('text/html; charset=utf-8').send(loginPage(next, true));
    reply.setCookie(SESSION_COOKIE, session, { path: '/', httpOnly: true, sameSite: 'strict', secure: reachedOverHttps(request) });
    return reply.redirect(next, 303);
  });
}

/**
 * Whether the browser reached the dashboard over https: directly, or through a proxy that ends TLS
 * and says so in `X-Forwarded-Proto` (the first hop's). Trusting the header costs nothing: it can
 * only add `Secure` to the cookie, which keeps it off plain http. Behind such a proxy the cookie
 * went without `Secure`.
 */
export function reachedOverHttps(request: FastifyRequest): boolean {
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return request.protocol === 'https' || first === 'https';
}
