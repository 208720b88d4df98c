import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { describeGateState } from '../../src/rate/describe-gate.js';
import { RateGate, rateGateKey, type RateGateOptions, type ThrottleVerdict } from '../../src/rate/rate-gate.js';
import { sleep } from '../../src/sleep.js';

describe('RateGate (real Redis)', () => {
  let redisA: Redis;
  let redisB: Redis;
  beforeAll(() => {
    redisA = new Redis(inject('redisUrl'));
    redisB = new Redis(inject('redisUrl'));
  });
  afterAll(async () => {
    await redisA.quit();
    await redisB.quit();
  });
  const key = (): string => `test-gate:${randomBytes(4).toString('hex')}`;
  /** Sends the folded completions, and waits until their 100 ms bucket is part of the last full second. */
  const settleIntoPastSecond = async (gate: RateGate): Promise<void> => {
    await gate.reserve(0);
    await sleep(120);
  };
  /** The rate in force under a learned request limit's estimate: 2% below it, at least one request a second (a quarter at most). */
  const underLearned = (estimate: number): number => estimate - Math.max(estimate * 0.02, Math.min(60, estimate / 4));
  /** The same once a nudge has shown another client: at least 10% below it. */
  const underShared = (estimate: number): number => Math.min(underLearned(estimate), estimate * 0.9);
  /** No slow start, no booking horizon: these cases look at the schedule itself. */
  const steady = { slowStartFraction: 1, horizonMs: 60_000 };

  /** Callers queueing for slots (and sending in them): only 429s that meet a saturated schedule teach the gate anything. */
  const saturate = async (gate: RateGate, slots = 4): Promise<void> => {
    for (let index = 0; index < slots; index += 1) await gate.reserve(0);
  };
  /** `count` requests accepted, sent `agoMs` before a slot just taken; then callers queue. */
  const acceptedAgo = async (gate: RateGate, count: number, agoMs: number): Promise<void> => {
    const { slotMs } = await gate.reserve(1);
    for (let index = 0; index < count; index += 1) gate.completed(1, 1, slotMs - agoMs);
    await saturate(gate);
  };
  /** Ramping, a cluster of 429s (3, the default strikesToCut) ends the ramp; fewer skip a slot. */
  const cluster = async (gate: RateGate): Promise<Awaited<ReturnType<RateGate['throttled']>>> => {
    for (let index = 0; index < 2; index += 1) expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    return gate.throttled('requests', 1);
  };

  it('keys a gate by model and endpoint host, never by anything secret', () => {
    expect(rateGateKey('embedq', 'text-embedding-v4', 'https://dashscope-intl.aliyuncs.com')).toBe('embedq:rate:text-embedding-v4:dashscope-intl.aliyuncs.com');
  });

  it('spaces requests evenly at the target rate, shared by every client of the key', async () => {
    const gateKey = key();
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const a = new RateGate(redisA, gateKey, limits, { targetUtilization: 0.99, ...steady });
    const b = new RateGate(redisB, gateKey, limits, { targetUtilization: 0.99, ...steady });
    const started = Date.now();
    const waits: number[] = [];
    for (let index = 0; index < 100; index += 1) {
      const reservation = await (index % 2 === 0 ? a : b).reserve(1);
      waits.push(reservation.waitMs + (Date.now() - started));
    }
    // Slots are 60000 / (6000 × 0.99) ≈ 10.1 ms apart, whichever client took them.
    const spacing = 60000 / (6000 * 0.99);
    const span = waits[99]! - waits[0]!;
    expect(span).toBeGreaterThan(99 * spacing - 15);
    expect(span).toBeLessThan(99 * spacing + 15);
    let maxInWindow = 0;
    for (let i = 0, j = 0; i < waits.length; i += 1) {
      while (waits[i]! - waits[j]! >= 1000) j += 1;
      maxInWindow = Math.max(maxInWindow, i - j + 1);
    }
    expect(maxInWindow).toBeLessThanOrEqual(100);
  });

  it('lets tokens bind when they are the tighter limit, and settles them with actual usage on the next reservation', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e9, tokensPerMinute: 60_000 }, { targetUtilization: 1, ...steady });
    // 1,000 tokens per second: each 500-token request pushes the next one 500 ms out (slot times,
    // on the gate's clock: what the calls took on a busy machine does not count).
    const first = await gate.reserve(500);
    expect(first.waitMs).toBe(0);
    const second = await gate.reserve(500);
    expect(second.slotMs - first.slotMs).toBe(500);
    // The first request actually used 100 tokens: 400 tokens' worth (400 ms) come back, with no
    // Redis call of its own (it rides on the next reservation).
    gate.completed(500, 100);
    const third = await gate.reserve(1);
    expect(third.slotMs - first.slotMs).toBe(600);
  });

  it('where tokens bind, callers queueing for token slots run the learned limit\'s clock (its climb back, hold and probe)', async () => {
    const gateKey = key();
    const gate = new RateGate(redisA, gateKey, { requestsPerMinute: 1e6, tokensPerMinute: 60_000 }, { targetUtilization: 1, slowStartFraction: 1 });
    for (let index = 0; index < 4; index += 1) await gate.reserve(500);
    for (let index = 0; index < 2; index += 1) await gate.throttled('tokens', 500);
    expect(await gate.throttled('tokens', 500)).toMatchObject({ action: 'cut', kind: 'tokens' });
    // Requests of 500 tokens, about one a second at the limit learned: the request schedule idles
    // between them, and the clock ran only in the moments after each booking.
    const started = Date.now();
    await Promise.all(Array.from({ length: 4 }, () => gate.acquire(500)));
    const elapsed = Date.now() - started;
    const active = Number(await redisA.hget(`${gateKey}:learned`, 'tA'));
    expect(elapsed).toBeGreaterThan(2_000);
    expect(active).toBeGreaterThan(elapsed * 0.5);
  });

  it('a caller waiting seconds for a token slot is traffic, not an idle gap: the slow start goes on', async () => {
    // A tenth of 60,000 TPM to start: 100 tokens a second, so each 100-token request's slot is a
    // second after the one before, and the booking loop asks again after ~0.8 s, past the idle gap.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e6, tokensPerMinute: 60_000 }, { targetUtilization: 1, slowStartFraction: 0.1, slowStartDoublingMs: 500, idleMs: 500 });
    const rates: number[] = [];
    for (let index = 0; index < 5; index += 1) {
      const reservation = await gate.acquire(100);
      gate.completed(100, 100, reservation.slotMs);
      rates.push(reservation.tokensPerMinute);
    }
    // Before, every call after such a wait started the slow start again: 6,000 TPM for good (a
    // single worker told the account's true TPM, its long lines' requests 5 s apart, never left it).
    expect(rates[0]).toBe(6_000);
    expect(rates.at(-1)).toBeGreaterThanOrEqual(6_000 * 4);
  });

  it('the slow start doubles at most once a reservation call, however long the call waited', async () => {
    // Each call books 1,000 tokens, seconds of the slow start's rate, so the schedule stays booked
    // ahead (not idle) while calls come 0.8 s apart, past the 0.5 s doubling time: uncapped, each
    // would multiply the rate by 2^1.6 with nothing sent at the rates between.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e6, tokensPerMinute: 60_000 }, { targetUtilization: 1, slowStartFraction: 0.1, slowStartDoublingMs: 500, idleMs: 500, horizonMs: 60_000 });
    const rates: number[] = [];
    for (let index = 0; index < 4; index += 1) {
      rates.push((await gate.reserve(1_000)).tokensPerMinute);
      await sleep(800);
    }
    expect(rates).toEqual([6_000, 12_000, 24_000, 48_000]);
  });

  it.each([
    ['never count as late', 60_000],
    ['all count as late', 0],
  ])('tokens given back wake a process\'s booking loop: a token limit is used whole when estimates are twice the usage (callers %s)', async (_, maxLatenessMs) => {
    // 1,000 tokens a second. Requests reserve 1,000 and use 500; four callers keep the schedule full.
    // Callers that all wake up late (a loaded machine: on CI they woke ~10 ms late) pay for it
    // with the token schedule moved on by their lateness. Each paid with a second slot of its
    // estimate at the token schedule's end before, which tokens given back could not bring
    // forward: 250 tokens a second.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e6, tokensPerMinute: 60_000 }, { targetUtilization: 1, slowStartFraction: 1, maxLatenessMs });
    const used: Array<{ slotMs: number; tokens: number }> = [];
    const until = Date.now() + 3_500;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < until) {
          const reservation = await gate.acquire(1_000);
          await sleep(100); // the request's latency
          gate.completed(1_000, 500, reservation.slotMs);
          used.push({ slotMs: reservation.slotMs, tokens: 500 });
        }
      }),
    );
    // Tokens used per second over the run's seconds 1 to 3 (the gate's clock): the first second
    // bursts, the last is partial. Before, the refunds rode on calls planned without them, and most
    // landed in the past: about two thirds of the limit.
    const first = Math.min(...used.map((request) => request.slotMs));
    const inWindow = used.filter((request) => request.slotMs >= first + 1_000 && request.slotMs < first + 3_000);
    const perSecond = inWindow.reduce((sum, request) => sum + request.tokens, 0) / 2;
    expect(perSecond).toBeGreaterThan(1_000 * 0.85);
    expect(perSecond).toBeLessThanOrEqual(1_000 * 1.05);
  });

  it('never books tokens more than a minute ahead, whatever usage a response claims', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e9, tokensPerMinute: 60_000 }, { targetUtilization: 1, ...steady });
    const { slotMs } = await gate.reserve(500);
    // A response claiming 10^12 tokens: settled as such, the next slot lay 31 years ahead.
    gate.completed(500, 1e12, slotMs);
    const next = await gate.reserve(1);
    expect(next.slotMs - slotMs).toBeLessThanOrEqual(61_000);
  });

  it('a caller queued for a slot far ahead asks again within seconds, so a schedule reset (or a new rate) applies', async () => {
    const gateKey = key();
    const gate = new RateGate(redisA, gateKey, { requestsPerMinute: 1e9, tokensPerMinute: 600 }, { targetUtilization: 1, slowStartFraction: 1 });
    await gate.acquire(500); // 10 tokens a second: the next slot is 50 s ahead
    const started = Date.now();
    const queued = gate.acquire(1);
    await sleep(200);
    await redisA.del(gateKey); // what an operator's reset of the gate does
    const waited = await Promise.race([queued.then(() => Date.now() - started), sleep(9_000).then(() => Infinity)]);
    expect(waited).toBeLessThan(7_000);
  });

  it('books slots only a short horizon ahead, so a new rate applies within it', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 600, tokensPerMinute: 1e12 }, { targetUtilization: 1, slowStartFraction: 1, horizonMs: 250 });
    // 100 ms slots: now, +100, +200 are booked; +300 lies beyond the horizon.
    const waits = [];
    const started = Date.now();
    for (let index = 0; index < 4; index += 1) waits.push(await gate.reserve(1));
    expect(waits.slice(0, 3).every((reservation) => reservation.booked)).toBe(true);
    expect(waits[3]).toMatchObject({ booked: false });
    // The next free slot (+300) enters the horizon 50 ms after the first call, less the time the calls took.
    expect(waits[3]!.waitMs).toBeGreaterThan(49 - (Date.now() - started));
    expect(waits[3]!.waitMs).toBeLessThanOrEqual(50);
    // acquire() waits unbooked, then books and sleeps until its slot, 300 ms after the first.
    await gate.acquire(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(295);
  });

  it('fails every queued caller when Redis cannot be reached, and the next callers ask again', async () => {
    // A client that never connected and queues nothing: every command fails at once.
    const offline = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null });
    offline.on('error', () => undefined);
    try {
      const gate = new RateGate(offline, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { slowStartFraction: 1 });
      const callers = await Promise.allSettled([gate.acquire(1), gate.acquire(1), gate.acquire(1)]);
      expect(callers.map((caller) => caller.status)).toEqual(['rejected', 'rejected', 'rejected']);
      await expect(gate.acquire(1)).rejects.toThrow(/enableOfflineQueue/);
    } finally {
      offline.disconnect();
    }
  });

  it('cancelQueued releases the callers still waiting for a slot with the reason given; booked ones keep theirs, and later callers are served', async () => {
    // 60 a minute with a 250-ms horizon: the first caller is booked at once, the rest wait a second each.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 60, tokensPerMinute: 1e12 }, { targetUtilization: 1, slowStartFraction: 1, horizonMs: 250 });
    const callers = [gate.acquire(1), gate.acquire(1), gate.acquire(1), gate.acquire(1)];
    await sleep(50);
    const reason = new Error('this worker is stopping');
    gate.cancelQueued(reason);
    const settled = await Promise.allSettled(callers);
    expect(settled[0]!.status).toBe('fulfilled');
    expect(settled.slice(1)).toEqual([1, 2, 3].map(() => ({ status: 'rejected', reason })));
    // The slots they never had are not taken from anyone: the next caller gets the next one.
    const started = Date.now();
    await gate.acquire(1);
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('a caller that wakes up late leaves at once and pays with the next free slot, which stays empty', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 600, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady });
    // 100 ms slots: the first now, the caller's at +100.
    const first = await gate.reserve(1);
    const acquired = gate.acquire(1);
    // Its reservation is booked. (5 ms were not always enough on a loaded machine: the reply came
    // in after the busy loop, and the caller then slept, on time, until its slot.)
    await sleep(50);
    // The event loop is busy for 85 ms: the caller wakes up ~35 ms after its slot.
    const busyUntil = performance.now() + 85;
    while (performance.now() < busyUntil);
    const missed = await acquired;
    // It left at once, not after waiting for another slot (+200, ~65 ms later) ...
    expect(performance.now() - busyUntil).toBeLessThan(40);
    // ... counted at the time it left, ~35 ms after its slot.
    expect(missed.slotMs - first.slotMs).toBeGreaterThan(120);
    expect(missed.waitMs).toBe(0);
    // It paid with the slot at +200: the next caller gets +300.
    expect((await gate.reserve(1)).slotMs - first.slotMs).toBe(300);
  });

  it('a caller late for a token slot pays with the tokens its lateness is worth, not its estimate again', async () => {
    // 1,000 tokens a second, requests of 1,000: one-second token slots, the first now, the caller's at +1,000.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1e6, tokensPerMinute: 60_000 }, { targetUtilization: 1, ...steady });
    const first = await gate.reserve(1_000);
    const acquired = gate.acquire(1_000);
    await sleep(990); // its reservation is booked, and its slot is ~10 ms away
    // The event loop is busy past the caller's slot: it wakes up ~50 ms late.
    const busyUntil = performance.now() + 60;
    while (performance.now() < busyUntil);
    const missed = await acquired;
    const lateMs = missed.slotMs - first.slotMs - 1_000;
    expect(lateMs).toBeGreaterThan(20);
    // The next slot moved by the lateness (~50 ms), not by another second (+3,000 before).
    const next = (await gate.reserve(1_000)).slotMs - first.slotMs;
    expect(next).toBeGreaterThanOrEqual(2_000 + lateMs - 2);
    expect(next).toBeLessThan(2_000 + lateMs + 50);
  });

  it("books a process's queued callers by their priority, in order of arrival among equals: a small job's step does not wait behind a backfill's", async () => {
    // 50 ms slots, 250 ms horizon: of twelve backfill callers, five are booked at once; the rest wait.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 1200, tokensPerMinute: 1e12 }, { targetUtilization: 1, slowStartFraction: 1, horizonMs: 250, maxLatenessMs: 60_000 });
    const order: string[] = [];
    const waiting = Array.from({ length: 12 }, (_, index) => gate.acquire(1, undefined, 9).then(() => order.push(`backfill ${index}`)));
    await sleep(20);
    const small = gate.acquire(1, undefined, 1).then(() => order.push('small'));
    await Promise.all([...waiting, small]);
    // Only the slots booked before it came go first (in order of arrival it came last, 13th).
    expect(order.indexOf('small')).toBeLessThanOrEqual(6);
    expect(order.filter((name) => name !== 'small')).toEqual(Array.from({ length: 12 }, (_, index) => `backfill ${index}`));
  });

  it("books a process's queued callers a horizon at a time, with one Redis call for many, in evenly spaced slots", async () => {
    // The gate's own connection, its scripts counted as they are sent. (MONITOR on another
    // connection saw the same, but ioredis sometimes read a MONITOR line as a reply it was not
    // waiting for and threw "Command queue state error".)
    const client = new Redis(inject('redisUrl'));
    let calls = 0;
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: Parameters<typeof send>[0], stream?: Parameters<typeof send>[1]) => {
      if (/^eval/i.test(command.name)) calls += 1;
      return send(command, stream);
    }) as typeof client.sendCommand;
    try {
      // 10 ms slots, 250 ms horizon: 60 callers take ~600 ms of slots, more than two horizons.
      // (Callers never count as late: on a loaded machine a late one's slot moves to when it left.)
      const gate = new RateGate(client, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, slowStartFraction: 1, horizonMs: 250, maxLatenessMs: 60_000 });
      const gaveUp = new AbortController();
      const leaving = gate.acquire(1, gaveUp.signal);
      const reservations = Promise.all(Array.from({ length: 60 }, () => gate.acquire(1)));
      gaveUp.abort(new Error('job stopped'));
      await expect(leaving).rejects.toThrow('job stopped');
      const slots = (await reservations).map((reservation) => reservation.slotMs).sort((a, b) => a - b);
      for (let index = 1; index < slots.length; index += 1) expect(slots[index]! - slots[index - 1]!).toBeGreaterThanOrEqual(10);
      await sleep(50); // MONITOR's copies of the last calls arrive
      // One call a caller (and more for those told to come back) before; now one per few slots.
      expect(calls).toBeGreaterThan(1);
      expect(calls).toBeLessThanOrEqual(20);
    } finally {
      client.disconnect();
    }
  });

  it('applies EMBEDQ_RESERVE: the rate in force leaves that fraction of the limit unused', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e9 }, { targetUtilization: 1, reserve: 0.25, ...steady });
    const reservation = await gate.reserve(1);
    expect(reservation.requestsPerMinute).toBeCloseTo(4500, 5);
    expect((await gate.state()).inForce.requestsPerMinute).toBeCloseTo(4500, 5);
  });

  it('ramps up from a slow start when nothing is learned', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, slowStartFraction: 0.1, slowStartDoublingMs: 200, idleMs: 400 });
    // What the first request will meet (it showed the whole ceiling before any traffic).
    expect((await gate.state()).inForce.requestsPerMinute).toBeCloseTo(600, 0);
    const first = await gate.reserve(1);
    expect(first.requestsPerMinute).toBeLessThan(700);
    // Demand below the rate does not grow it: a rate nobody used is untested.
    await sleep(500);
    expect((await gate.reserve(1)).requestsPerMinute).toBeLessThan(700);
    // Callers queueing for slots (reservations ahead of the clock) let it double every 200 ms.
    const started = Date.now();
    let rate = 0;
    while (Date.now() - started < 1_000 && rate < 6000) {
      for (let index = 0; index < 5; index += 1) rate = (await gate.reserve(1)).requestsPerMinute;
      await sleep(20);
    }
    expect(rate).toBe(6000);
    expect(Date.now() - started).toBeGreaterThan(500); // 0.1 × 2^(t/200) reaches 1 at t ≈ 660 ms
    expect((await gate.state()).slowStart).toBe(false);
    // Idle past idleMs: traffic would start slowly again, and the state says so.
    await sleep(600);
    expect(await gate.state()).toMatchObject({ slowStart: true, inForce: { requestsPerMinute: 600 } });
  });

  it('skips a slot for a lone 429 at a limit believed right; burst 429s never cut', async () => {
    const limits = { requestsPerMinute: 600, tokensPerMinute: 1e12 };
    const options = { targetUtilization: 1, ...steady };
    const gate = new RateGate(redisA, key(), limits, options);
    // 600 QPM: one slot every 100 ms. A lone 429 gives up the next slot but keeps the rate: the
    // next reservation gets the slot after it, 200 ms after the first on the gate's clock (slot
    // times, so the time the calls took on a busy machine does not count).
    const started = Date.now();
    const first = await gate.reserve(1);
    expect(first.waitMs).toBe(0);
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    const afterSkip = await gate.reserve(1);
    expect(afterSkip.slotMs - first.slotMs).toBeGreaterThanOrEqual(199);
    expect(afterSkip.slotMs - first.slotMs).toBeLessThan(201 + (Date.now() - started));
    expect(afterSkip.requestsPerMinute).toBe(600);
    for (let index = 0; index < 5; index += 1) expect(await gate.throttled('burst', 1)).toEqual({ action: 'skip', reason: 'burst' });
    expect((await gate.reserve(1)).requestsPerMinute).toBe(600);
    expect((await gate.state()).learned.requestsPerMinute).toBeUndefined();
  });

  it('learns the limit from a cluster of 429s: what was accepted in the last second, by send time', async () => {
    const gateKey = key();
    const limits = { requestsPerMinute: 600, tokensPerMinute: 1e12 };
    // Two 429s make a cluster here (3 by default), before the second could nudge (see below).
    const options = { targetUtilization: 1, ...steady, strikesToCut: 2 };
    const a = new RateGate(redisA, gateKey, limits, options);
    const b = new RateGate(redisB, gateKey, limits, options);
    // The provider accepted 4 requests sent in one 100 ms bucket 0.7 s ago (240 a minute), and
    // one more sent 5 s ago (out of every window); then 429s cluster.
    const { slotMs } = await a.reserve(1);
    for (let index = 0; index < 4; index += 1) a.completed(1, 1, slotMs - 700);
    a.completed(1, 1, slotMs - 5_000);
    await saturate(a); // callers queue: these 429s meet a saturated schedule
    expect(await a.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    const verdict = await b.throttled('requests', 1);
    expect(verdict).toMatchObject({ action: 'cut', kind: 'requests', configuredPerMinute: 600 });
    if (verdict.action !== 'cut') throw new Error('unreachable');
    // 4 accepted in the window sent 0.5-1.5 s ago: 240 a minute; the estimate restarts 3% below it.
    expect(verdict.learnedPerMinute).toBe(240);
    expect(verdict.inForcePerMinute).toBe(Math.round(underLearned(240 * 0.97)));
    // Every client of the key paces at it, and the state says configured, learned and in force.
    expect((await a.reserve(1)).requestsPerMinute).toBeLessThan(250);
    const state = await a.state();
    expect(state.configured.requestsPerMinute).toBe(600);
    expect(state.learned.requestsPerMinute).toBeCloseTo(verdict.learnedPerMinute, -1);
    expect(state.learned.tokensPerMinute).toBeUndefined();
    expect(state.learnedExpiresInMs).toBeGreaterThan(3_500_000);
    // Token 429s act on the token schedule only.
    expect((await a.throttled('tokens', 1)).action).toBe('skip');
  });

  it('counts a booked slot never sent as accepted, and a request in flight as neither: starved workers do not teach a lower limit', async () => {
    // Callers never count as late here: a late one books a second slot and leaves it empty, which
    // counts as accepted too (on a loaded CI machine one did, and the limit learned was 480).
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady, maxLatenessMs: 60_000 });
    // Twelve slots booked 10 ms apart. Three were left empty (their callers gave up); of the nine
    // sent, four were accepted, three refused (the cluster below) and two are still in flight.
    const sent = [];
    for (let index = 0; index < 12; index += 1) {
      if (index % 4 === 3) gate.unsent((await gate.reserve(1)).slotMs);
      else sent.push(await gate.acquire(1));
    }
    for (const { slotMs } of sent.slice(0, 4)) gate.completed(1, 1, slotMs);
    await sleep(800); // into the window the cut reads: requests sent 0.5 to 1.5 s ago
    await saturate(gate, 12);
    for (let index = 0; index < 2; index += 1) expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    // DashScope accepted 4 and never saw 3: the limit learned is 7 a second, not the 4 accepted
    // (nor 9, had the two in flight counted).
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'cut', learnedPerMinute: 420 });
  });

  it('does not cut a limit believed right for a few 429s among many accepted requests', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady });
    // 50 accepted in the last second: a few quick 429s at the configured limit are jitter, 5 (10%)
    // a cluster, which cuts to what was accepted lately.
    // The first slot is sent (acceptedAgo), and callers queue before each 429. On a loaded CI
    // machine the fifth 429 skipped: the first slot, booked and never sent, counted as one more
    // accepted once its bucket was a second old (51: 5 429s were under 10%), and the twelve slots
    // booked once had drained (only 429s that meet a saturated schedule count).
    await acceptedAgo(gate, 50, 800);
    for (let index = 0; index < 4; index += 1) {
      await saturate(gate, 3);
      expect(await gate.throttled('requests', 1)).toEqual({ action: 'skip', reason: 'no-cluster-configured' });
    }
    await saturate(gate, 3);
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'cut', learnedPerMinute: 3000 });
  });

  it('at a configured limit, cuts for 429s that keep coming one at a time (a client sharing the account), not for as many among a hundred times the requests', async () => {
    /** One 429 every 600 ms, never three in a strike window, with `perSecond` accepted meanwhile. */
    const steady429s = async (gate: RateGate, perSecond: number, count: number): Promise<ThrottleVerdict[]> => {
      const verdicts: ThrottleVerdict[] = [];
      for (let index = 0; index < count; index += 1) {
        const { slotMs } = await gate.reserve(1);
        for (let sent = 0; sent < perSecond * 0.6; sent += 1) gate.completed(1, 1, slotMs - 700);
        await saturate(gate, 3);
        verdicts.push(await gate.throttled('requests', 1));
        await sleep(600);
      }
      return verdicts;
    };
    // Told 900 a minute; another client takes part of it: ~13 a second accepted, a 429 every 0.6 s.
    const shared = new RateGate(redisA, key(), { requestsPerMinute: 900, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady });
    const verdicts = await steady429s(shared, 13, 5);
    expect(verdicts.slice(0, 4).map((verdict) => verdict.action)).toEqual(['skip', 'skip', 'skip', 'skip']);
    expect(verdicts[4]).toMatchObject({ action: 'cut' });
    expect((verdicts[4] as { learnedPerMinute: number }).learnedPerMinute).toBeLessThan(900);
    // Told 6,000 with ~100 a second accepted: five 429s in 3 s are 1% of the requests, jitter.
    const jitter = new RateGate(redisB, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady });
    expect((await steady429s(jitter, 100, 5)).map((verdict) => verdict.action)).toEqual(['skip', 'skip', 'skip', 'skip', 'skip']);
  });

  it('nudges a learned limit down for 429s that keep coming without clustering (a client it cannot see), down to a floor; dips to half there, and gives it back when they go on in the dip', async () => {
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    // No clusters after the first (strikesToCut 100 from then on): the nudges alone.
    const gateKey = key();
    const cutter = new RateGate(redisA, gateKey, limits, { targetUtilization: 1, ...steady });
    const gate = new RateGate(redisB, gateKey, limits, { targetUtilization: 1, ...steady, cooldownMs: 100, strikesToCut: 100 });
    // A cluster learns 1,200 a minute (20 accepted, sent 0.8 s ago).
    const { slotMs } = await cutter.reserve(1);
    for (let index = 0; index < 20; index += 1) cutter.completed(1, 1, slotMs - 800);
    await saturate(cutter);
    expect(await cluster(cutter)).toMatchObject({ action: 'cut', learnedPerMinute: 1200 });
    // Under the learned limit every 429 nudges (once per cooldown), 10% each, down to 80% of it;
    // once nudged, the rate in force keeps a nudge's step below the limit (972, not 1,020: the
    // neighbour's share is known no closer than that).
    const verdicts: string[] = [];
    for (let index = 0; index < 8; index += 1) {
      await sleep(120);
      await saturate(gate);
      const verdict = await gate.throttled('requests', 1);
      verdicts.push(verdict.action === 'skip' ? 'skip' : `${verdict.action} ${verdict.learnedPerMinute}`);
      if (index === 0) expect((await gate.state()).inForce.requestsPerMinute).toBeLessThanOrEqual(underShared(1080) + 0.5);
    }
    // At the floor, a 429 dips the rate to half the limit the nudges started from (the learned limit
    // becomes the middle, 780, climbed back to from 600); one in the dip, past its first cooldown,
    // is not a neighbour's (it would have stopped colliding): it gives back the limit the nudges
    // started from and turns nudges off.
    expect(verdicts).toEqual(['nudge 1080', 'nudge 972', 'nudge 960', 'dip 780', 'restore 1200', 'skip', 'skip', 'skip']);
    expect((await gate.state()).learned.requestsPerMinute).toBe(1200);
  });

  it('a dip to half that stops the 429s found a neighbour needing more than the nudges gave up: the middle is the new limit, half its floor', async () => {
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const gateKey = key();
    const cutter = new RateGate(redisA, gateKey, limits, { targetUtilization: 1, ...steady });
    const gate = new RateGate(redisB, gateKey, limits, { targetUtilization: 1, ...steady, cooldownMs: 100, strikesToCut: 100, dipListenMs: 500 });
    const { slotMs } = await cutter.reserve(1);
    for (let index = 0; index < 20; index += 1) cutter.completed(1, 1, slotMs - 800);
    await saturate(cutter);
    expect(await cluster(cutter)).toMatchObject({ action: 'cut', learnedPerMinute: 1200 });
    // Callers keep queueing through the pause: the dip listens in time with traffic.
    const next429 = async (pauseMs: number): Promise<string> => {
      for (let waited = 0; waited < pauseMs; waited += 100) {
        await sleep(100);
        await saturate(gate, 2);
      }
      const verdict = await gate.throttled('requests', 1);
      return verdict.action === 'skip' ? 'skip' : `${verdict.action} ${verdict.learnedPerMinute}`;
    };
    const verdicts: string[] = [];
    for (let index = 0; index < 4; index += 1) verdicts.push(await next429(300)); // the cut is more than a second old at the dip
    expect(verdicts).toEqual(['nudge 1080', 'nudge 972', 'nudge 960', 'dip 780']);
    // The dip starts at half the limit the nudges started from, below a nudge's step.
    const dipped = await gate.state();
    expect(dipped.learned.requestsPerMinute).toBe(780);
    expect(dipped.inForce.requestsPerMinute).toBeLessThanOrEqual(underShared(600) + 0.5);
    expect(dipped.shared).toBe(true);
    // 429s within its first cooldown come from requests sent before it: even three make no cluster
    // (a cut there would go below the half the dip listens at).
    const strict = new RateGate(redisA, gateKey, limits, { targetUtilization: 1, ...steady, cooldownMs: 1_000, dipListenMs: 500 });
    for (let index = 0; index < 3; index += 1) expect(await strict.throttled('requests', 1)).toMatchObject({ action: 'skip', reason: 'after-nudge' });
    expect((await gate.state()).learned.requestsPerMinute).toBe(780);
    // The dip listened quietly: the next 429s nudge from the middle down to half, and only three
    // there give back the limit learned alone.
    const after: string[] = [];
    for (let index = 0; index < 6; index += 1) after.push(await next429(index === 0 ? 700 : 200));
    expect(after).toEqual(['nudge 702', 'nudge 632', 'nudge 600', 'skip', 'skip', 'restore 1200']);
  });

  it('under a learned limit, 429s that keep coming one at a time nudge it; they make no cluster', async () => {
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const gate = new RateGate(redisA, key(), limits, { targetUtilization: 1, ...steady });
    await acceptedAgo(gate, 20, 800);
    expect(await cluster(gate)).toMatchObject({ action: 'cut', learnedPerMinute: 1200 });
    // Three 429s within 3 s of the cut, past its cooldown: counted over three seconds, as they once
    // were, they made a cluster (and random 429s at 5% made one every ~10 s); one a second, they
    // nudge (at most once a second).
    const verdicts: string[] = [];
    for (const pause of [1_100, 800, 800]) {
      await sleep(pause);
      await acceptedAgo(gate, 5, 800); // 3 429s are 10% of a second's accepted requests
      const verdict = await gate.throttled('requests', 1);
      verdicts.push(verdict.action === 'skip' ? 'skip' : `${verdict.action} ${verdict.learnedPerMinute}`);
    }
    expect(verdicts).toEqual(['nudge 1080', 'skip', 'nudge 972']);
  });

  it("at a limit believed right, a cut reads only requests sent after the last cut's drain", async () => {
    const limits = { requestsPerMinute: 600, tokensPerMinute: 1e12 };
    // Every 429 is a cluster here (one, and 10% of the accepted): the cuts alone.
    const gate = new RateGate(redisA, key(), limits, { targetUtilization: 1, ...steady, strikesToCut: 1 });
    // 8 accepted a second: 600 a minute is cut to 480, and sending pauses 250 ms (the drain) after
    // the four slots already booked, so it resumes 650 ms after the cut.
    await acceptedAgo(gate, 8, 800);
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'cut', learnedPerMinute: 480 });
    // 1.1 s later, past the cooldown: the window the cut would read (sent 0.5 to 1.5 s ago) holds the
    // drain, whose pause looks like a fall. No cut.
    await sleep(1_100);
    await acceptedAgo(gate, 6, 700);
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    // 1.5 s after sending resumed (after the slots booked before the cut, and the drain), the
    // window is all after the drain: the cut reads it.
    await sleep(1_300);
    await acceptedAgo(gate, 7, 700);
    expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'cut', learnedPerMinute: 420 });
  });

  it('a cluster with nothing accepted for three seconds (a minute window still full after a quota fell) halves what was sent, and sending goes on within seconds', async () => {
    // Requests of 240 tokens at 420 a minute send 100,800 tokens a minute, far below the 24,000,000 configured.
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 420, tokensPerMinute: 24_000_000 }, { targetUtilization: 1, ...steady });
    for (let index = 0; index < 4; index += 1) await gate.reserve(240);
    for (let index = 0; index < 2; index += 1) expect(await gate.throttled('tokens', 240)).toMatchObject({ action: 'skip' });
    // The windows hold nothing accepted: the cut halves the 100,800 being sent. (It learned 1 token
    // a minute, and the next 240-token request's slot lay four hours ahead.)
    expect(await gate.throttled('tokens', 240)).toMatchObject({ action: 'cut', kind: 'tokens', learnedPerMinute: 50_400 });
    const next = await gate.reserve(240);
    expect(next.waitMs).toBeLessThan(3_000);

    // The same in a slow start whose first requests were all refused: it learned 1 request a minute,
    // and a 3-request job took 165 s (a slow start sends 10% of the 6,000 told, doubling each second).
    const starting = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1 });
    await saturate(starting, 3);
    for (let index = 0; index < 2; index += 1) await starting.throttled('requests', 1);
    const verdict = await starting.throttled('requests', 1);
    expect(verdict).toMatchObject({ action: 'cut', kind: 'requests' });
    if (verdict.action !== 'cut') throw new Error('unreachable');
    expect(verdict.learnedPerMinute).toBeGreaterThanOrEqual(300);
    expect(verdict.learnedPerMinute).toBeLessThan(700);

    // However few were being sent, the limit learned leaves one request every 10 s.
    const slow = new RateGate(redisA, key(), { requestsPerMinute: 8, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady });
    await saturate(slow, 2);
    for (let index = 0; index < 2; index += 1) await slow.throttled('requests', 1);
    expect(await slow.throttled('requests', 1)).toMatchObject({ action: 'cut', kind: 'requests', learnedPerMinute: 6 });
  });

  it('a cut at a limit believed right forgets that a nudge showed another client: the limit itself fell', async () => {
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const gateKey = key();
    const cutter = new RateGate(redisA, gateKey, limits, { targetUtilization: 1, ...steady });
    const nudger = new RateGate(redisB, gateKey, limits, { targetUtilization: 1, ...steady, strikesToCut: 100 });
    await acceptedAgo(cutter, 20, 800);
    expect(await cluster(cutter)).toMatchObject({ action: 'cut', learnedPerMinute: 1200 });
    await sleep(1_100);
    expect(await nudger.throttled('requests', 1)).toMatchObject({ action: 'nudge', learnedPerMinute: 1080 });
    expect((await cutter.state()).shared).toBe(true);
    // Past the drain (1 s) and the window after it: 10 accepted a second, then a cluster. Its first
    // 429 nudges again, and the third cuts to what was accepted.
    await sleep(1_600);
    await acceptedAgo(cutter, 10, 700);
    const verdicts = [];
    for (let index = 0; index < 3; index += 1) verdicts.push((await cutter.throttled('requests', 1)).action);
    expect(verdicts).toEqual(['nudge', 'skip', 'cut']);
    const state = await cutter.state();
    expect(state.learned.requestsPerMinute).toBe(600);
    // The longest holds were for a neighbour; this was a fall, and the next probe comes after 16 s.
    expect(state.shared).toBe(false);
  });

  it('never nudges a configured limit: single 429s there only skip a slot', async () => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 6000, tokensPerMinute: 1e12 }, { targetUtilization: 1, ...steady, cooldownMs: 100 });
    const { slotMs } = await gate.reserve(1);
    for (let index = 0; index < 20; index += 1) gate.completed(1, 1, slotMs - 800);
    for (let index = 0; index < 4; index += 1) {
      await sleep(1_100); // never two within the strike window: no cluster
      await saturate(gate);
      expect(await gate.throttled('requests', 1)).toMatchObject({ action: 'skip' });
    }
    expect((await gate.state()).learned.requestsPerMinute).toBeUndefined();
  });

  it('remembers a learned limit for the next job (a new gate on the same key) and forgets it after the TTL', async () => {
    const gateKey = key();
    const limits = { requestsPerMinute: 6000, tokensPerMinute: 1e12 };
    const first = new RateGate(redisA, gateKey, limits, { targetUtilization: 1, learnedTtlMs: 1_500 });
    await first.reserve(1); // slow start: a cluster of 429s is news
    for (let index = 0; index < 20; index += 1) first.completed(1, 1);
    await settleIntoPastSecond(first);
    await saturate(first);
    const verdict = await cluster(first);
    expect(verdict.action).toBe('cut');
    const next = new RateGate(redisB, gateKey, limits, { targetUtilization: 1, learnedTtlMs: 1_500 });
    const reservation = await next.reserve(1);
    // 20 accepted in the last second (1,200 a minute), but the 429 came in the slow start's first
    // step, at ~600 a minute: a ramp's 429 caps the limit a step (10%) above the rate that failed.
    // The estimate restarts 3% below it and climbs back, and the rate keeps one request a second
    // under it.
    if (verdict.action !== 'cut') throw new Error('unreachable');
    // (The slow start's clock ran for the ~120 ms the settlement took: a few percent above 600.)
    expect(verdict.learnedPerMinute).toBeGreaterThanOrEqual(660);
    expect(verdict.learnedPerMinute).toBeLessThan(770);
    expect(reservation.requestsPerMinute).toBeGreaterThanOrEqual(underLearned(verdict.learnedPerMinute * 0.97) - 1);
    expect(reservation.requestsPerMinute).toBeLessThanOrEqual(underLearned(verdict.learnedPerMinute) + 1);
    await sleep(1_700);
    expect((await next.state()).learned.requestsPerMinute).toBeUndefined();
  });

  /**
   * A gate on a fast curve (K = cbrt(0.1 / 1) ≈ 0.46 s to the plateau, 0.3 s hold, +10% in 0.46 s,
   * then doubling every 200 ms; ceiling 2,000 QPM) that has just learned a limit from 16 accepted.
   */
  const fastCurveAfterCut = async (options: RateGateOptions = {}): Promise<{ gate: RateGate; verdict: Exclude<ThrottleVerdict, { action: 'skip' }> }> => {
    const gate = new RateGate(redisA, key(), { requestsPerMinute: 2000, tokensPerMinute: 1e12 }, { targetUtilization: 1, growth: 1, plateauMs: 300, backoff: 0.1, cooldownMs: 0, learnedMargin: 0, probeDoublingMs: 200, ...options });
    await gate.reserve(1);
    for (let index = 0; index < 16; index += 1) gate.completed(1, 1);
    await settleIntoPastSecond(gate);
    await saturate(gate);
    const verdict = await cluster(gate);
    if (verdict.action !== 'cut') throw new Error(`expected a cut, got ${JSON.stringify(verdict)}`);
    return { gate, verdict };
  };

  it('ends a probe above the learned limit at its first 429, crediting it no more than a step below the rate that failed', async () => {
    const { gate, verdict } = await fastCurveAfterCut();
    const learned = verdict.learnedPerMinute;
    // Back to the limit (~0.46 s), the hold (0.3 s), then the probe climbs above it.
    let rate = 0;
    for (let index = 0; index < 40 && rate <= learned * 1.02; index += 1) {
      await gate.reserve(0);
      rate = (await gate.reserve(0)).requestsPerMinute;
      await sleep(50);
    }
    expect(rate).toBeGreaterThan(learned * 1.02);
    // One 429 ends it: the limit it left stays, and the rate restarts below it.
    await saturate(gate);
    const ended = await gate.throttled('requests', 1);
    // The same limit found again: a confirmation, which the worker logs at info, not as a limit learned.
    expect(verdict).toMatchObject({ confirmed: false });
    expect(ended).toMatchObject({ action: 'cut', learnedPerMinute: learned, confirmed: true });
    expect((await gate.reserve(0)).requestsPerMinute).toBeLessThan(learned);
  });

  it('once a nudge shows a client sharing the limit, holds the longest before probing', async () => {
    // The fast curve with the default margin, and a longest hold of 2 s.
    const { gate, verdict: cut } = await fastCurveAfterCut({ learnedMargin: 0.02, maxPlateauMs: 2_000 });
    expect((await gate.state()).shared).toBe(false);
    // One 429 under the learned limit, no cluster: a neighbour. The limit is nudged 10%.
    await saturate(gate);
    const nudged = await gate.throttled('requests', 1);
    if (nudged.action !== 'nudge') throw new Error(`expected a nudge, got ${JSON.stringify(nudged)}`);
    // (Verdicts are rounded to whole requests a minute.)
    expect(Math.abs(nudged.learnedPerMinute - cut.learnedPerMinute * 0.9)).toBeLessThanOrEqual(1);
    expect(Math.abs(nudged.inForcePerMinute - underShared(nudged.learnedPerMinute))).toBeLessThanOrEqual(1);
    const state = await gate.state();
    expect(state.shared).toBe(true);
    expect(describeGateState(state)).toMatch(/learned \d+ QPM \(429s kept coming below it, as when another client shares the account: 10% kept free, probed once a minute; remembered 60 min more\)/);
    // The hold is now the longest (2 s), not 0.3 s: no probe for the next second, then one.
    const samples: Array<[number, number]> = [];
    const started = performance.now();
    while (performance.now() - started < 3_500) {
      // Two reservations per 50 ms keep callers queueing: the gate's clock runs.
      await gate.reserve(0);
      samples.push([performance.now() - started, (await gate.reserve(0)).requestsPerMinute]);
      await sleep(50);
    }
    const held = samples.filter(([at]) => at < 1_000).map(([, rate]) => rate);
    expect(Math.max(...held)).toBeLessThanOrEqual(nudged.inForcePerMinute + 0.5);
    expect(samples.at(-1)![1]).toBeGreaterThan(nudged.learnedPerMinute);
  });

  it('after a cut, climbs back to the learned limit, holds, then probes above it and gives it up at the ceiling', async () => {
    const { gate, verdict } = await fastCurveAfterCut();
    const learned = verdict.learnedPerMinute;
    expect(verdict.inForcePerMinute).toBeCloseTo(learned * 0.9, -1);
    const samples: number[] = [];
    for (let index = 0; index < 60; index += 1) {
      // Two reservations per 50 ms at ≤ 33 a second keep callers queueing: the clock runs.
      await gate.reserve(0);
      samples.push((await gate.reserve(0)).requestsPerMinute);
      await sleep(50);
    }
    expect(Math.max(...samples.slice(0, 4))).toBeLessThan(learned);
    expect(samples.some((rate) => Math.abs(rate - learned) <= 0.5)).toBe(true);
    // Probing reached the configured ceiling: the learned limit is dropped.
    expect(samples.at(-1)).toBe(2000);
    expect((await gate.state()).learned.requestsPerMinute).toBeUndefined();
  });
});
