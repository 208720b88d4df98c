import { describe, expect, it } from 'vitest';

import { formatCount } from '../../src/format-count.js';

describe('formatCount', () => {
  it("writes whole numbers as toLocaleString('en-US') does", () => {
    const samples = [0, 7, 999, 1_000, 8_192, 10_000, 123_456, 1_000_000, 12_345_678, 2_147_483_647, Number.MAX_SAFE_INTEGER, -1, -1_234, -1_000_000];
    for (let power = 1; power < 1e15; power *= 7) samples.push(power, power - 1, -power);
    for (const value of samples) expect(formatCount(value)).toBe(value.toLocaleString('en-US'));
  });

  it('rounds to a whole number (an estimate of tokens may have a fraction)', () => {
    expect(formatCount(1_234.4)).toBe('1,234');
    expect(formatCount(999.5)).toBe('1,000');
    expect(formatCount(-0.2)).toBe('0');
  });
});
