import { describe, expect, it } from 'vitest';

import { heldExactly } from '../../src/corpus/exact-number.js';

describe('heldExactly', () => {
  it('is true of a text that is exactly its double, however written', () => {
    for (const text of ['0', '-0', '0.0', '0e5', '2', '2.0', '2.00', '2e0', '20E-1', '1.5', '1.50', '-1.5', '0.5', '0.25', '1e21', '1000000000000000000000', '9007199254740992', '1e22', '0.125', '0.1000000000000000055511151231257827021181583404541015625', '179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368']) {
      expect(heldExactly(text, JSON.parse(text) as number), text).toBe(true);
    }
  });

  it('is false of a text the double only rounds to: a fraction, past 2^53, beyond the range, below the smallest double', () => {
    for (const text of ['0.1', '0.10', '1e-400', '-1e-400', '1.00000000000000000001', '0.99999999999999999999', '9007199254740993', '1e23', '1e400', '-1e400', '5e-324', '1.7976931348623157e308']) {
      expect(heldExactly(text, JSON.parse(text) as number), text).toBe(false);
    }
  });

  it('stays cheap on texts of many digits or huge exponents', () => {
    const started = performance.now();
    expect(heldExactly(`1${'0'.repeat(100_000)}`, Infinity)).toBe(false);
    expect(heldExactly(`0.${'0'.repeat(100_000)}1`, 0)).toBe(false);
    expect(heldExactly(`1.${'0'.repeat(100_000)}1`, 1)).toBe(false);
    expect(heldExactly('1e-99999999', 0)).toBe(false);
    expect(heldExactly(`1.${'0'.repeat(100_000)}`, 1)).toBe(true);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
