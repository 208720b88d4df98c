import { describe, expect, it } from 'vitest';

import { parseJsonBytes } from '../../src/dashscope/parse-json-bytes.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import { nativeSuccessBody } from '../../src/emulator/serialize-response.js';
import { mulberry32 } from '../../src/seeded-random.js';

const KEYS = new Set(['embedding']);
const SPARSE = new Set(['sparse_embedding']);
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
/** Whether a JSON number stays finite in a Float32Array; the parser gives up on a vector holding one that does not. */
const fitsFloat32 = (number: string): boolean => Number.isFinite(Math.fround(JSON.parse(number) as number));

/**
 * What JSON.parse gives, with `embedding` arrays rounded to float32 as the decoder stores them, and
 * the numeric `value` of each `sparse_embedding` entry too.
 */
function reference(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => {
    if (key === 'embedding' && Array.isArray(value)) return Float32Array.from(value as number[]);
    if (key === 'sparse_embedding' && Array.isArray(value)) {
      return value.map((entry: unknown) =>
        entry !== null && typeof entry === 'object' && typeof (entry as { value?: unknown }).value === 'number'
          ? { ...entry, value: Math.fround((entry as { value: number }).value) }
          : entry,
      );
    }
    return value;
  });
}

describe('parseJsonBytes', () => {
  it('reads an emulator response exactly as JSON.parse + Math.fround would', () => {
    const parameters = { model: 'text-embedding-v4', dimension: 1024, outputType: 'dense&sparse', textType: 'document' } as const;
    const texts = ['风急天高猿啸哀，渚清沙白鸟飞回。', 'The quick brown fox "quoted" \\ backslash', 'naïve café — ünïcode ✓ 😀'];
    const items = texts.map((text, index) => ({ index, ...emulatorEmbedding(text, parameters) }));
    const body = nativeSuccessBody(items, 42, 'req-1');
    const parsed = parseJsonBytes(body, KEYS, SPARSE);
    expect(parsed).toEqual(reference(Buffer.from(body).toString('utf8')));
    const sparse = (parsed as { output: { embeddings: Array<{ sparse_embedding: Array<{ value: number }> }> } }).output.embeddings[1]!.sparse_embedding;
    expect(sparse.map((entry) => entry.value)).toEqual(items[1]!.sparse!.map((entry) => entry.value));
    const first = (parsed as { output: { embeddings: Array<{ embedding: Float32Array }> } }).output.embeddings[0]!.embedding;
    expect(first).toBeInstanceOf(Float32Array);
    expect(Array.from(first)).toEqual(Array.from(items[0]!.dense!));
  });

  it('matches JSON.parse bit for bit on awkward numbers', () => {
    const numbers = [
      '0', '-0', '-0.0', '1', '-1', '0.1', '0.30000000000000004', '-0.0238461103290319', '0.9238461103290319', '123456789012345678901234567890',
      '1e-7', '1E+3', '-2.5e-10', '4.9e-324', '1.7976931348623157e308', '0.000000000000000000000001', '3.14159265358979323846264338327950288',
      '9007199254740993', '1.5000000000000000000000', '100e-2',
    ];
    for (const number of numbers) {
      const text = `{"embedding":[${fitsFloat32(number) ? number : 0}],"plain":[${number}]}`;
      const parsed = parseJsonBytes(bytes(text), KEYS) as { embedding: Float32Array; plain: number[] };
      const expected = JSON.parse(text) as { embedding: number[]; plain: number[] };
      expect(Object.is(parsed.plain[0], expected.plain[0]), number).toBe(true);
      expect(Object.is(parsed.embedding[0], Math.fround(expected.embedding[0]!)), number).toBe(true);
    }
  });

  it('gives up on a vector holding a number beyond float32 (Infinity once stored), whichever path reads it; plain numbers stay as JSON.parse reads them', () => {
    const beyond = ['1e39', '-1e39', '1e400', '3.4028236e38', '3.4028235677973366e38', '1.7976931348623157e308', '340282356779733661637539395458142568448', '1000000000000000000000000000000000000000', '1000000000000000000000000000000000000000.5'];
    for (const number of beyond) {
      expect(fitsFloat32(number), number).toBe(false);
      expect(parseJsonBytes(bytes(`{"embedding":[0.5,${number},0.25]}`), KEYS), number).toBeUndefined();
      expect(parseJsonBytes(bytes(`{"plain":[0.5,${number},0.25]}`), KEYS), number).toEqual(JSON.parse(`{"plain":[0.5,${number},0.25]}`));
    }
    // The largest float32 and the double just below the midpoint above it still fit.
    for (const number of ['3.4028234663852886e38', '3.4028235677973362e38', '-340282346638528859811704183484516925440']) {
      expect((parseJsonBytes(bytes(`{"embedding":[${number}]}`), KEYS) as { embedding: Float32Array }).embedding[0], number).toBe(Math.fround(Number(number)));
    }
  });

  it('reads random float32 values written with 16 decimals exactly', () => {
    const values = Float32Array.from({ length: 5000 }, (_, index) => Math.fround(Math.sin(index * 12.9898) * (index % 7 === 0 ? 3 : 0.05)));
    const text = `{"embedding":[${Array.from(values, (value) => value.toFixed(16)).join(',')}]}`;
    const parsed = parseJsonBytes(bytes(text), KEYS) as { embedding: Float32Array };
    expect(Array.from(parsed.embedding)).toEqual(Array.from(Float32Array.from(JSON.parse(text).embedding as number[])));
  });

  it('handles whitespace, nesting, literals, escapes and empty containers like JSON.parse', () => {
    const text = ' { "a" : [ 1 , 2.5 , { "b" : null } ] , "t" : true , "f" : false , "s" : "x\\"y\\u00e9\\n" , "e" : [ ] , "o" : { } , "__proto__" : 1 } ';
    expect(parseJsonBytes(bytes(text), KEYS)).toEqual(JSON.parse(text));
    expect(Object.keys(parseJsonBytes(bytes(text), KEYS) as object)).toContain('__proto__');
  });

  it('gives up (undefined) on anything that is not valid JSON, so the caller falls back', () => {
    for (const text of ['', '{', '{"a":}', '[1,]', '{"a":1,}', '01', '1.', '-', 'tru', '"unterminated', '{"a":1} x', '{"embedding":[1,"x"]}', '{"a":"\u0001"}']) {
      expect(parseJsonBytes(bytes(text), KEYS), text).toBeUndefined();
    }
  });

  it('matches JSON.parse (and JSON.parse + Float32Array) bit for bit on 200,000 random numbers of every form', () => {
    const random = mulberry32(20261129);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
    const digits = (count: number): string => Array.from({ length: count }, () => Math.floor(random() * 10)).join('');
    const randomDouble = (): number => {
      const bits = new DataView(new ArrayBuffer(8));
      bits.setUint32(0, Math.floor(random() * 2 ** 32));
      bits.setUint32(4, Math.floor(random() * 2 ** 32));
      const value = bits.getFloat64(0);
      return Number.isFinite(value) ? value : 0.5;
    };
    const forms: Array<() => string> = [
      // The emulator's and DashScope's form: a float32 written with 16 decimals (mantissas near and above 2^53).
      () => (random() < 0.5 ? '-' : '') + (Math.fround(random() * pick([1, 0.1, 0.01, 0.001]))).toFixed(16),
      () => String(Math.fround((random() - 0.5) * pick([2, 0.2, 1e-3, 1e-6, 1e-9]))),
      () => String((random() - 0.5) * pick([2, 1e3, 1e-5])),
      () => randomDouble().toString(),
      () => randomDouble().toExponential(Math.floor(random() * 20)),
      () => (random() * pick([1, 1e-10, 1e10])).toPrecision(1 + Math.floor(random() * 21)),
      () => (random() - 0.5).toFixed(Math.floor(random() * 25)),
      // Long mantissas, leading and trailing zeros, integers, exponents of every sign and case.
      () => `${pick(['', '-'])}${pick(['0', digits(1 + Math.floor(random() * 3)).replace(/^0+/, '') || '7'])}.${'0'.repeat(Math.floor(random() * 8))}${digits(1 + Math.floor(random() * 30))}`,
      () => `${pick(['', '-'])}${String(1 + Math.floor(random() * 9))}${digits(Math.floor(random() * 25))}`,
      () => `${pick(['', '-'])}${String(1 + Math.floor(random() * 9))}.${digits(Math.floor(random() * 20) + 1)}${pick(['e', 'E'])}${pick(['', '+', '-'])}${Math.floor(random() * 400)}`,
      () => pick(['0', '-0', '0.0', '-0.0', '-0e5', '0E-3', '1e22', '1e23', '9007199254740992', '9007199254740993', '9007199254740991.5', '0.0000000000000000000001', '1.4e-45', '7e-46', '3.4028235e38', '3.4028236e38', '-1e-400', '1e400']),
    ];
    const numbers = Array.from({ length: 200_000 }, () => pick(forms)());
    for (let start = 0; start < numbers.length; start += 1_000) {
      const chunk = numbers.slice(start, start + 1_000);
      const separator = random() < 0.5 ? ',' : ' , ';
      // Vectors get the numbers that fit float32 (the parser gives up on the others, tested above).
      const fitting = chunk.filter(fitsFloat32);
      const text = `{"embedding":[${fitting.join(separator)}],"plain":[${chunk.join(separator)}]}`;
      const parsed = parseJsonBytes(bytes(text), KEYS) as { embedding: Float32Array; plain: number[] };
      const expected = JSON.parse(text) as { embedding: number[]; plain: number[] };
      const expectedFloat32 = Float32Array.from(expected.embedding);
      chunk.forEach((number, index) => {
        if (!Object.is(parsed.plain[index], expected.plain[index])) expect.fail(`${number}: ${parsed.plain[index]} ≠ JSON.parse ${expected.plain[index]}`);
      });
      fitting.forEach((number, index) => {
        if (!Object.is(parsed.embedding[index], expectedFloat32[index])) expect.fail(`${number}: float32 ${parsed.embedding[index]} ≠ ${expectedFloat32[index]}`);
      });
      expect(parsed.embedding.length).toBe(fitting.length);
    }
  });

  it('gives up on malformed numbers inside a vector, so the caller falls back to JSON.parse', () => {
    for (const number of ['01', '-', '1.', '.5', '+1', '1e', '1e+', '--1', '0x10', 'NaN', 'Infinity', '1.5.2']) {
      expect(parseJsonBytes(bytes(`{"embedding":[0.5,${number},0.25]}`), KEYS), number).toBeUndefined();
    }
  });

  it('gives up on a body cut off inside a number of a vector, whatever digit it ends on (fractions are read four digits a step)', () => {
    const whole = '{"embedding":[0.5,-0.0123456789012345,0.25]}';
    for (let end = whole.indexOf('-'); end < whole.indexOf(',0.25'); end += 1) {
      expect(parseJsonBytes(bytes(whole.slice(0, end)), KEYS), whole.slice(0, end)).toBeUndefined();
      // The same bytes at the start of a larger buffer: only the view is read.
      const padded = bytes(`${whole.slice(0, end)}1234567`);
      expect(parseJsonBytes(padded.subarray(0, end), KEYS), `view ${whole.slice(0, end)}`).toBeUndefined();
    }
  });

  it('reads sparse entries of the usual shape with float32 values, and any other shape as JSON.parse does', () => {
    const random = mulberry32(7);
    const entries: string[] = [];
    const expectedValues: number[] = [];
    for (let index = 0; index < 20_000; index += 1) {
      // Values as the emulator and DashScope write them, and longer ones past 2^53 and 10^22.
      const value = [
        () => String(Math.fround(random() * 3)),
        () => (random() * 2).toFixed(16 + Math.floor(random() * 8)),
        () => `0.${'0'.repeat(Math.floor(random() * 6))}${Math.floor(random() * 1e9)}${Math.floor(random() * 1e9)}${Math.floor(random() * 1e9)}`,
        () => `${Math.floor(random() * 1e9)}.${Math.floor(random() * 1e9)}e-${Math.floor(random() * 30)}`,
      ][index % 4]!();
      const token = ['the', 'fox', '北京', 'naïve', 'a"b', 'back\\slash', 'x'.repeat(30), String(index)][index % 8]!;
      entries.push(`{"index":${index},"value":${value},"token":${JSON.stringify(token)}}`);
      expectedValues.push(Math.fround(Number(value)));
    }
    const odd = ['{"value":0.25,"index":1,"token":"swapped"}', '{ "index" : 2 , "value" : 0.1 , "token" : "spaced" }', '{"index":3,"value":0.3,"token":"t","extra":1}', '{"index":-4,"value":0.4,"token":"t"}', '{"index":05,"value":0.5,"token":"t"}'];
    for (const list of [entries, odd.slice(0, 4)]) {
      const text = `{"sparse_embedding":[${list.join(',')}]}`;
      const parsed = parseJsonBytes(bytes(text), KEYS, SPARSE) as { sparse_embedding: Array<{ value: number }> };
      expect(parsed).toEqual(reference(text));
    }
    const parsed = parseJsonBytes(bytes(`{"sparse_embedding":[${entries.join(',')}]}`), KEYS, SPARSE) as { sparse_embedding: Array<{ value: number }> };
    parsed.sparse_embedding.forEach((entry, index) => {
      if (!Object.is(entry.value, expectedValues[index])) expect.fail(`${entries[index]}: ${entry.value} ≠ ${expectedValues[index]}`);
    });
    // Not JSON: the whole body falls back.
    expect(parseJsonBytes(bytes(`{"sparse_embedding":[${odd[4]}]}`), KEYS, SPARSE)).toBeUndefined();
  });

  it('rounds decimals at and next to float32 rounding midpoints exactly (long mantissas, where the double is approximated)', () => {
    const random = mulberry32(11);
    const cases: string[] = [];
    const scratch = new Float32Array(1);
    const bits = new Uint32Array(scratch.buffer);
    for (let round = 0; round < 5_000; round += 1) {
      scratch[0] = 0.001 + random() * 1.5;
      const low = scratch[0]!;
      bits[0]! += 1;
      const high = scratch[0]!;
      // The midpoint is a double with an exact decimal expansion of at most ~36 characters here.
      const midpoint = ((low + high) / 2).toFixed(40).replace(/0+$/, '');
      const room = Math.max(0, 39 - midpoint.length);
      cases.push(midpoint, `${midpoint}${'0'.repeat(Math.floor(random() * room))}1`, `${midpoint.slice(0, -1)}${String(Number(midpoint.at(-1)) - 1)}${'9'.repeat(1 + Math.floor(random() * room))}`);
    }
    const list = cases.join(',');
    const text = `{"embedding":[${list}],"sparse_embedding":[${cases.map((value, index) => `{"index":${index},"value":${value},"token":"t"}`).join(',')}]}`;
    const parsed = parseJsonBytes(bytes(text), KEYS, SPARSE) as { embedding: Float32Array; sparse_embedding: Array<{ value: number }> };
    cases.forEach((number, index) => {
      const expected = Math.fround(JSON.parse(number) as number);
      if (!Object.is(parsed.embedding[index], expected)) expect.fail(`${number}: ${parsed.embedding[index]} ≠ ${expected}`);
      if (!Object.is(parsed.sparse_embedding[index]!.value, expected)) expect.fail(`sparse ${number}: ${parsed.sparse_embedding[index]!.value} ≠ ${expected}`);
    });
  });
});
