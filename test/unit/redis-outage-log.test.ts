import { EventEmitter } from 'node:events';

import { describe, expect, it } from 'vitest';

import { createLogger } from '../../src/logger.js';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { RedisNotAnsweringError } from '../../src/redis/redis-deadline.js';
import { RedisOutageLog } from '../../src/redis/redis-outage-log.js';

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED', syscall: 'connect' });

describe('RedisOutageLog', () => {
  it('logs the first connection error of an outage, then a reminder per interval, without stacks; other errors are not its', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const outage = new RedisOutageLog(logger, 'REDIS_URL=redis://:***@127.0.0.1:6379', 50);
    expect(outage.note(new Error('ERR unknown command'))).toBe(false);
    for (let attempt = 0; attempt < 20; attempt += 1) expect(outage.note(refused())).toBe(true);
    expect(lines).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(outage.note(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))).toBe(true);
    expect(lines.map((line) => line.msg)).toEqual(['lost Redis; waiting for it to come back', 'Redis is still unreachable']);
    expect(lines[1]).toMatchObject({ code: 'REDIS_UNAVAILABLE', redis: 'REDIS_URL=redis://:***@127.0.0.1:6379', reason: 'read ECONNRESET', errors: 21 });
    for (const line of lines) expect(line).not.toHaveProperty('err');
  });

  it('ends an outage when a connection is ready and no connection error follows; one ready just as Redis went down does not (it logged the outage twice)', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const outage = new RedisOutageLog(logger, 'REDIS_URL=redis://127.0.0.1:6379');
    // ioredis's client as far as the log sees it: 'ready' events.
    const connection = new EventEmitter();
    outage.watch(connection as unknown as RedisClient);
    outage.note(Object.assign(new Error('write ECONNRESET'), { code: 'ECONNRESET' }));
    connection.emit('ready');
    outage.note(refused());
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(lines.map((line) => line.msg)).toEqual(['lost Redis; waiting for it to come back']);
    connection.emit('ready');
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(lines.map((line) => line.msg)).toEqual(['lost Redis; waiting for it to come back', 'Redis is reachable again']);
    expect(lines[1]).toMatchObject({ errors: 2 });
  });

  it('takes a Redis that has not answered in time as an outage, and its answer as the end of it (a frozen Redis fires no connection error, nor a ready)', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const outage = new RedisOutageLog(logger, 'REDIS_URL=redis://127.0.0.1:6379', 50);
    expect(outage.note(new RedisNotAnsweringError(5_000))).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(outage.note(new RedisNotAnsweringError(5_000))).toBe(true);
    outage.answered();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(lines.map((line) => line.msg)).toEqual(['lost Redis; waiting for it to come back', 'Redis is still unreachable', 'Redis is reachable again']);
    expect(lines[0]).toMatchObject({ code: 'REDIS_UNAVAILABLE', reason: expect.stringMatching(/^Redis has not answered for 5 s/) });
    // An answer outside an outage says nothing.
    outage.answered();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(lines).toHaveLength(3);
  });

  it('takes credentials Redis refuses while the process runs (a rotated password) as an outage: one line saying so, then reminders', () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const outage = new RedisOutageLog(logger, 'REDIS_URL=redis://app:***@127.0.0.1:6379', 60_000);
    const wrongpass = (): Error => Object.assign(new Error('WRONGPASS invalid username-password pair or user is disabled.'), { name: 'ReplyError' });
    // Before, not taken: each reconnection's refusal was logged with its stack (27 lines a second).
    for (let attempt = 0; attempt < 30; attempt += 1) expect(outage.note(wrongpass())).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ code: 'REDIS_UNAVAILABLE', redis: 'REDIS_URL=redis://app:***@127.0.0.1:6379', reason: 'WRONGPASS invalid username-password pair or user is disabled.' });
    expect(lines[0]!.msg).toMatch(/^Redis refused the credentials/);
    expect(lines[0]).not.toHaveProperty('err');

    // An outage that began as a reset (the rotation killed the connections) says the refusal once too.
    const later: Array<Record<string, unknown>> = [];
    const reset = new RedisOutageLog(createLogger({ level: 'info' }, { write: (line: string) => void later.push(JSON.parse(line) as Record<string, unknown>) }), 'REDIS_URL=redis://app:***@h:1', 60_000);
    reset.note(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    for (let attempt = 0; attempt < 10; attempt += 1) reset.note(wrongpass());
    expect(later.map((line) => String(line.msg).split(';')[0])).toEqual(['lost Redis', 'Redis refused the credentials (rotated? check the password in the setting named)']);
  });
});
