import { describe, expect, it } from 'vitest';

import { RateLimiter } from '../../src/emulator/rate-limiter.js';
import { SlidingWindow } from '../../src/emulator/sliding-window.js';

describe('SlidingWindow', () => {
  it('counts events in the last windowMs, exactly', () => {
    const window = new SlidingWindow(1000);
    for (let index = 0; index < 100; index++) window.add(index * 10, 2); // grows past the initial 64
    expect(window.count(990)).toBe(100);
    expect(window.amount(990)).toBe(200);
    expect(window.count(1000)).toBe(99); // the event at 0 is now exactly 1000 ms old
    expect(window.count(1985)).toBe(1);
    expect(window.amount(2000)).toBe(0);
  });
});

describe('RateLimiter', () => {
  it('enforces requests per second at 1/60 of the minute limit', () => {
    const limiter = new RateLimiter({ requestsPerMinute: 600, tokensPerMinute: Infinity });
    const verdicts = Array.from({ length: 12 }, (_, index) => limiter.tryAcquire('m', 1, index));
    expect(verdicts.filter((verdict) => verdict === undefined)).toHaveLength(10);
    expect(verdicts.slice(10)).toEqual(['requests', 'requests']);
    expect(limiter.tryAcquire('m', 1, 999)).toBe('requests');
    expect(limiter.tryAcquire('m', 1, 1000)).toBeUndefined(); // the first one left the window
    expect(limiter.tryAcquire('other-model', 1, 1000)).toBeUndefined(); // limits are per model
  });

  it('lets a limit that is not a multiple of 60 through in full: its second rounds up, its minute holds it', () => {
    // 90 QPM: 1.5 a second. An exact 1.5 refused every second request a second, so 90 gave 60.
    const limiter = new RateLimiter({ requestsPerMinute: 90, tokensPerMinute: Infinity });
    const accepted = Array.from({ length: 90 }, (_, index) => limiter.tryAcquire('m', 1, Math.round(index * (60_000 / 90)))).filter((verdict) => verdict === undefined);
    expect(accepted).toHaveLength(90);
    expect(limiter.tryAcquire('m', 1, 59_999)).toBe('requests');
  });

  it('enforces the minute window too', () => {
    const limiter = new RateLimiter({ requestsPerMinute: 3, tokensPerMinute: Infinity });
    expect(limiter.tryAcquire('m', 1, 0)).toBeUndefined();
    expect(limiter.tryAcquire('m', 1, 500)).toBe('requests'); // per second: at least 1
    expect(limiter.tryAcquire('m', 1, 1000)).toBeUndefined();
    expect(limiter.tryAcquire('m', 1, 2000)).toBeUndefined();
    expect(limiter.tryAcquire('m', 1, 3000)).toBe('requests'); // 3 in the last minute
    expect(limiter.tryAcquire('m', 1, 60_000)).toBeUndefined();
  });

  it('enforces tokens per second and per minute; rejected requests consume nothing', () => {
    const limiter = new RateLimiter({ requestsPerMinute: Infinity, tokensPerMinute: 6000 }); // 100 per second
    expect(limiter.tryAcquire('m', 60, 0)).toBeUndefined();
    expect(limiter.tryAcquire('m', 50, 1)).toBe('tokens');
    expect(limiter.tryAcquire('m', 40, 2)).toBeUndefined(); // exactly 100
    expect(limiter.tryAcquire('m', 1, 3)).toBe('tokens');
    expect(limiter.tryAcquire('m', 500, 5000)).toBeUndefined(); // larger than a second's worth, but the window is empty
  });

  it('treats Infinity as unlimited and clear() as an idle minute', () => {
    const limiter = new RateLimiter({ requestsPerMinute: 60, tokensPerMinute: Infinity });
    expect(limiter.tryAcquire('m', 1e9, 0)).toBeUndefined();
    expect(limiter.tryAcquire('m', 1, 1)).toBe('requests');
    limiter.clear();
    expect(limiter.tryAcquire('m', 1, 2)).toBeUndefined();
  });
});
