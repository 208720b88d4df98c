import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';

import { inject } from 'vitest';
import { afterEach, describe, expect, it } from 'vitest';

import { startPrivateRedis } from '../../src/redis/private-redis.js';
import { sleep } from '../../src/sleep.js';
import { runEmbedq, spawnEmbedq, stopProcess } from '../support/world.js';

const execFileAsync = promisify(execFile);

const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  REDIS_URL: inject('redisUrl'),
  EMBEDQ_REDIS_PREFIX: 'dashcmd',
  LOG_LEVEL: 'info',
  ...extra,
});

describe('embedq dashboard (the command)', () => {
  const started: Array<ReturnType<typeof spawnEmbedq>> = [];
  // A test that failed half way leaves no dashboard process behind.
  afterEach(async () => {
    await Promise.all(started.splice(0).map((child) => stopProcess(child, 'SIGKILL')));
  });

  /** A dashboard process on `redisUrl`, once it answers, with its log lines and an open event stream. */
  const watchDashboard = async (redisUrl: string) => {
    const child = spawnEmbedq(env({ REDIS_URL: redisUrl }), ['dashboard', '--port', '0']);
    started.push(child);
    const logs = { text: '' };
    child.stdout!.on('data', (chunk: Buffer) => (logs.text += chunk.toString()));
    await expect.poll(() => /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(logs.text)?.[1], { timeout: 30_000 }).toBeDefined();
    const address = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(logs.text)![1]!;
    expect((await fetch(`${address}/api/jobs`)).status).toBe(200);
    const events: string[] = [];
    const stream = await fetch(`${address}/api/events`);
    const reader = stream.body!.getReader();
    void (async () => {
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) events.push(Buffer.from(chunk.value).toString());
    })().catch(() => undefined);
    return { address, logs, events, reader };
  };

  it('refuses a non-loopback host without EMBEDQ_DASHBOARD_TOKEN', async () => {
    const result = await runEmbedq(env(), ['dashboard', '--host', '0.0.0.0', '--port', '0']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('EMBEDQ_DASHBOARD_TOKEN');
  });

  // The emulator too: it said `INTERNAL: listen EADDRINUSE`, exit 1, as if embedq had a bug.
  it.each(['dashboard', 'emulator'])('%s exits 2 when its port is taken, instead of running on without listening', async (command) => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      const child = spawnEmbedq(env(), [command, '--port', String(port)]);
      started.push(child);
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await Promise.race([
        new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode))),
        new Promise<string>((resolve) => setTimeout(() => resolve('still running after 20 s'), 20_000)),
      ]);
      expect(code, stderr).toBe(2);
      expect(stderr).toContain(`CONFIG_INVALID: Invalid options:\n- port: 127.0.0.1:${port} is already in use; choose another with --port`);
    } finally {
      taken.close();
    }
  });

  it('serves /healthz and the token-protected page, and stops on SIGTERM', async () => {
    const child = spawnEmbedq(env({ EMBEDQ_DASHBOARD_TOKEN: 'cmd-token' }), ['dashboard', '--port', '0']);
    started.push(child);
    let output = '';
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no address in: ${output}`)), 30_000);
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const match = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
    });
    expect((await fetch(`${address}/healthz`)).status).toBe(200);
    expect((await fetch(`${address}/`)).status).toBe(401);
    expect((await fetch(`${address}/`, { headers: { authorization: 'Bearer cmd-token' } })).status).toBe(200);
    // An open page (an SSE stream) must not keep the process from stopping.
    const events = await fetch(`${address}/api/events`, { headers: { authorization: 'Bearer cmd-token' } });
    expect(events.headers.get('content-type')).toBe('text/event-stream');
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await stopProcess(child, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(output).not.toContain('cmd-token');
  });

  it('answers 503 at once and shows Redis as unreachable while it is down (its endpoints answered nothing, then up to 4 s late), logs it in two lines, then recovers', { timeout: 60_000 }, async () => {
    const redis = await startPrivateRedis();
    try {
      const { address, logs, events, reader } = await watchDashboard(redis.url);

      const before = logs.text.length;
      await redis.kill();
      // Long enough for ioredis's reconnection backoff to grow to seconds: a request waited for
      // the next failed attempt but one, 2-4 s.
      await sleep(10_000);
      for (const endpoint of ['/api/jobs', '/api/jobs/cj-none', '/api/queues', '/api/rates', '/api/workers', '/api/schedules', '/metrics', '/queues/api/queues']) {
        const asked = Date.now();
        const response = await fetch(`${address}${endpoint}`, { signal: AbortSignal.timeout(10_000) });
        expect(response.status, endpoint).toBe(503);
        expect(Date.now() - asked, endpoint).toBeLessThan(1_000);
        expect(await response.json(), endpoint).toMatchObject({ code: 'REDIS_UNAVAILABLE', error: expect.stringMatching(/^Redis is unreachable/) });
      }
      await expect.poll(() => events.join(''), { timeout: 10_000 }).toMatch(/"redisProblem":"unreachable since [^"]+; the figures below are from /);

      await redis.restart();
      await expect.poll(async () => (await fetch(`${address}/api/jobs`)).status, { timeout: 20_000 }).toBe(200);
      await reader.cancel();
      // One line for the loss, one for the return; no error with its stack per reconnection attempt.
      await expect.poll(() => logs.text.slice(before), { timeout: 10_000 }).toContain('Redis is reachable again');
      const lines = logs.text.slice(before).trim().split('\n');
      expect(lines.filter((line) => line.includes('"code":"REDIS_UNAVAILABLE"')), logs.text.slice(before)).toHaveLength(1);
      expect(lines.length, logs.text.slice(before)).toBeLessThanOrEqual(3);
      expect(logs.text.slice(before)).not.toContain('"stack"');
    } finally {
      await redis.stop();
    }
  });

  it('answers 503 within 5 s, then at once, and says so on the page while Redis keeps its connections but answers nothing, then recovers', { timeout: 60_000 }, async () => {
    const redis = await startPrivateRedis();
    try {
      const { address, events, reader } = await watchDashboard(redis.url);

      // Connections stay open, no command is answered: a network that drops packets, a Redis
      // swapping. Before, each endpoint answered ~20 s late and the page showed old figures as live.
      // Bull Board's API too: it waited for as long as Redis did.
      const endpoints = ['/api/jobs', '/api/jobs/cj-none', '/api/rates', '/api/schedules', '/metrics', '/queues/api/queues'];
      await execFileAsync('redis-cli', ['-p', String(redis.port), 'CLIENT', 'PAUSE', '20000', 'ALL']);
      const pausedAt = Date.now();
      await Promise.all(
        endpoints.map(async (endpoint) => {
          const response = await fetch(`${address}${endpoint}`, { signal: AbortSignal.timeout(15_000) });
          expect(response.status, endpoint).toBe(503);
          expect(Date.now() - pausedAt, endpoint).toBeLessThan(7_000);
          expect(await response.json(), endpoint).toMatchObject({ code: 'REDIS_UNAVAILABLE', error: expect.stringContaining('Redis has not answered for 5 s') });
        }),
      );
      // Known not to answer now: the same requests fail at once, not after 5 s each, for as long
      // as it lasts (before, every request waited the full 5 s).
      await Promise.all(
        endpoints.map(async (endpoint) => {
          const askedAt = Date.now();
          const response = await fetch(`${address}${endpoint}`, { signal: AbortSignal.timeout(15_000) });
          expect(response.status, endpoint).toBe(503);
          expect(Date.now() - askedAt, endpoint).toBeLessThan(1_000);
          expect(await response.json(), endpoint).toMatchObject({ code: 'REDIS_UNAVAILABLE', error: expect.stringMatching(/Redis has not answered for \d+ s/) });
        }),
      );
      expect((await fetch(`${address}/livez`)).status).toBe(200);
      await expect.poll(() => events.join(''), { timeout: 10_000 }).toMatch(/"redisProblem":"not answering since [^"]+; the figures below are from /);
      expect(Date.now() - pausedAt, 'the checks must run inside the pause').toBeLessThan(20_000);

      await expect.poll(async () => (await fetch(`${address}/api/jobs`)).status, { timeout: 20_000 }).toBe(200);
      await expect.poll(() => events.at(-1) ?? '', { timeout: 10_000 }).toContain('"redisProblem":null');
      await reader.cancel();
    } finally {
      await redis.stop();
    }
  });

  it('stops within its shutdown bound on SIGTERM even when Redis is unreachable', async () => {
    const child = spawnEmbedq(env({ REDIS_URL: 'redis://127.0.0.1:1' }), ['dashboard', '--port', '0']);
    started.push(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await expect.poll(() => output, { timeout: 30_000 }).toContain('dashboard listening');
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const stopping = Date.now();
    child.kill('SIGTERM');
    expect(await exited).not.toBeNull();
    expect(Date.now() - stopping).toBeLessThan(20_000);
  });
});
