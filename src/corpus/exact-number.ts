/**
 * Whether a JSON number's text is exactly the double it parses to: `2.0`, `1.50`, `1e21` are;
 * `0.1`, `1e-400` (0), `1.00000000000000000001` (1), `9007199254740993` (…992) and `1e400`
 * (Infinity) are not. An id a double holds exactly is written as JSON writes that double (`2.0`
 * and `2` are one id); any other keeps its text, so that two numbers never become one id.
 *
 * Compared exactly, in integers: the text is D × 10^E, the double M × 2^K.
 */
export function heldExactly(text: string, value: number): boolean {
  if (!Number.isFinite(value)) return false;
  const parts = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!parts) return false;
  const [, sign, whole, fraction = '', exponent = '0'] = parts;
  let digits = `${whole}${fraction}`.replace(/^0+/, '');
  let e = Number(exponent) - fraction.length;
  if (digits === '') return value === 0;
  if (value === 0 || (sign === '-') !== value < 0) return false;
  // Not /0*$/: tried at every position, it took seconds on 100,000 digits.
  let end = digits.length;
  while (digits.charCodeAt(end - 1) === 48) end -= 1;
  e += digits.length - end;
  digits = digits.slice(0, end);
  // A finite double has at most 767 significant digits and lies within 1e-324..1e309: past those,
  // the text is not one (and the powers below stay small whatever a line holds).
  if (digits.length > 767 || e + digits.length > 310 || e + digits.length < -330) return false;
  const { mantissa, exponent: k } = binaryParts(Math.abs(value));
  const ten = (power: number): bigint => 10n ** BigInt(power);
  const two = (power: number): bigint => 2n ** BigInt(power);
  const decimal = BigInt(digits) * ten(Math.max(e, 0)) * two(Math.max(-k, 0));
  const binary = mantissa * two(Math.max(k, 0)) * ten(Math.max(-e, 0));
  return decimal === binary;
}

/** A positive finite double as mantissa × 2^exponent, the mantissa an integer. */
function binaryParts(value: number): { mantissa: bigint; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  // Subnormals have no implicit leading 1 and the exponent of the smallest normal.
  return biased === 0 ? { mantissa: fraction, exponent: -1074 } : { mantissa: fraction | (1n << 52n), exponent: biased - 1075 };
}
