import { describe, expect, it } from 'vitest';

import { BodyBuffers } from '../../src/dashscope/body-buffers.js';

describe('BodyBuffers', () => {
  it('hands a released buffer out again for a body that fits, and a new one for a larger body', () => {
    const buffers = new BodyBuffers();
    const first = buffers.take(200_000);
    expect(first.length).toBeGreaterThanOrEqual(200_000);
    buffers.release(first);
    expect(buffers.take(150_000)).toBe(first);
    buffers.release(first);
    const larger = buffers.take(first.length + 1);
    expect(larger).not.toBe(first);
    expect(larger.length).toBeGreaterThan(first.length);
  });

  it('never hands out the same buffer twice before it is released', () => {
    const buffers = new BodyBuffers();
    const a = buffers.take(1_000);
    buffers.release(a);
    buffers.release(a); // a second release of the same buffer is ignored
    const b = buffers.take(1_000);
    const c = buffers.take(1_000);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
  });

  it('keeps at most maxFree buffers, preferring the larger ones, and never pools very large ones', () => {
    const buffers = new BodyBuffers(2);
    const small = buffers.take(10);
    const medium = buffers.take(100_000);
    const large = buffers.take(1_000_000);
    buffers.release(small);
    buffers.release(medium);
    buffers.release(large);
    expect(buffers.freeCount).toBe(2);
    expect(buffers.take(900_000)).toBe(large);
    expect(buffers.take(90_000)).toBe(medium);
    const huge = buffers.take(10 * 2 ** 20);
    expect(huge.length).toBe(10 * 2 ** 20);
    buffers.release(huge);
    expect(buffers.freeCount).toBe(0);
  });
});
