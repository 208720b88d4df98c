/**
 * A JSON parser over UTF-8 bytes that reads the arrays under chosen keys (`embedding`) straight
 * into Float32Array. A 10-text native response at dimension 1024 is ~250 KB, almost all numbers:
 * `TextDecoder` + `JSON.parse` build ~10,000 boxed doubles per response only for us to copy them
 * into Float32Arrays. Here numbers go from bytes to float32 slots directly.
 *
 * Exactness: a decimal with at most 2^53 as its digits and a power of ten up to 10^22 is read as
 * one correctly rounded division or multiplication (Clinger's fast path), which is the same
 * double JSON.parse produces; anything else goes through `Number()` on the text. Storing into a
 * Float32Array then rounds exactly as `Math.fround(JSON.parse(...))` would.
 *
 * Arrays under `sparseKeys` are read as lists of `{index, value, token}` (DashScope's
 * `sparse_embedding`, ~100 entries per text), the usual shape directly; in every object entry a
 * numeric `value` is rounded to float32, as the decoder stores it. Anything else is ordinary JSON.
 *
 * Float32 results may also come from a mantissa past 2^53: the double is then approximated to
 * within a few parts in 2^53, and used only when every double in a margin of 2^-45 around it
 * rounds to the same float32 (so the exact double, inside the margin, rounds to it too); else
 * `Number()` on the text decides. Checked against JSON.parse in test/unit/parse-json-bytes.test.ts.
 *
 * A Float32Array it returns holds only finite values: a number beyond float32 (≥ 2^128 less half a
 * step, such as 1e39) in an array under `float32Keys` makes it give up, so the decoder meets the
 * number on the JSON.parse path and refuses it. Checked here, not by the decoder on every vector,
 * because only the slow paths can overflow: the fast one's magnitudes stay below 2^53 × 10^22.
 * Sparse values are left as JSON.parse + Math.fround gives them (Infinity included); the decoder
 * checks each entry anyway.
 *
 * Returns undefined for anything it does not handle (invalid JSON included); callers then use
 * JSON.parse on the text, which also produces the error message.
 */
export function parseJsonBytes(bytes: Uint8Array, float32Keys: ReadonlySet<string>, sparseKeys: ReadonlySet<string> = NO_KEYS): unknown {
  const parser = new Parser(bytes, float32Keys, sparseKeys);
  try {
    parser.skipWhitespace();
    const value = parser.value(undefined);
    parser.skipWhitespace();
    return parser.position === bytes.length ? value : undefined;
  } catch (error) {
    if (error === GIVE_UP) return undefined;
    throw error;
  }
}

const GIVE_UP = Symbol('give up');
const NO_KEYS: ReadonlySet<string> = new Set();
/** Digits beyond which the approximate float32 path is not taken (its error bound assumes fewer). */
const MAX_APPROXIMATE_DIGITS = 40;
const MARGIN = 2 ** -45;
/** `{"index":`, `,"value":`, `,"token":"`: the one shape of a sparse entry, as bytes. */
const ascii = (text: string): Uint8Array => Uint8Array.from(text, (character) => character.charCodeAt(0));
const SPARSE_OPEN = ascii('{"index":');
const SPARSE_VALUE = ascii(',"value":');
const SPARSE_TOKEN = ascii(',"token":"');
/** Short ASCII tokens repeat across texts; a direct-mapped cache saves a string per repeat. */
const TOKEN_CACHE_SIZE = 4096;
const MAX_CACHED_TOKEN_BYTES = 24;
const KNOWN_KEYS = ['index', 'value', 'token', 'text_index', 'embedding', 'sparse_embedding', 'object'];
const POWERS_OF_TEN = Array.from({ length: 23 }, (_, exponent) => 10 ** exponent);
const MAX_EXACT = 2 ** 53;

class Parser {
  position = 0;
  private readonly buffer: Buffer;

  private readonly tokenCache: Array<string | undefined> = new Array<string | undefined>(TOKEN_CACHE_SIZE);

  constructor(
    private readonly bytes: Uint8Array,
    private readonly float32Keys: ReadonlySet<string>,
    private readonly sparseKeys: ReadonlySet<string>,
  ) {
    this.buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  skipWhitespace(): void {
    const bytes = this.bytes;
    let position = this.position;
    for (;;) {
      const byte = bytes[position];
      if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) position += 1;
      else break;
    }
    this.position = position;
  }

  value(key: string | undefined): unknown {
    const byte = this.bytes[this.position];
    if (byte === 0x7b) return this.object();
    if (byte === 0x5b) {
      if (key === undefined) return this.array();
      if (this.float32Keys.has(key)) return this.float32Array();
      return this.array(this.sparseKeys.has(key));
    }
    if (byte === 0x22) return this.string();
    if (byte === 0x74) return this.literal('true', true);
    if (byte === 0x66) return this.literal('false', false);
    if (byte === 0x6e) return this.literal('null', null);
    return this.number();
  }

  private object(): Record<string, unknown> {
    const result: Record<string, unknown> = {};
    this.position += 1;
    this.skipWhitespace();
    if (this.bytes[this.position] === 0x7d) {
      this.position += 1;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.bytes[this.position] !== 0x22) throw GIVE_UP;
      const key = this.key();
      this.skipWhitespace();
      if (this.bytes[this.position] !== 0x3a) throw GIVE_UP;
      this.position += 1;
      this.skipWhitespace();
      const value = this.value(key);
      // An own data property even for "__proto__", as JSON.parse makes it.
      if (key === '__proto__') Object.defineProperty(result, key, { value, enumerable: true, writable: true, configurable: true });
      else result[key] = value;
      this.skipWhitespace();
      const next = this.bytes[this.position];
      this.position += 1;
      if (next === 0x7d) return result;
      if (next !== 0x2c) throw GIVE_UP;
    }
  }

  /**
   * A list. `sparse`: a `sparse_embedding` list, whose entries of the usual shape are read directly
   * and any other as JSON (a flag rather than an item-reader callback: one predictable branch per
   * element on the decoder's hot path).
   */
  private array(sparse = false): unknown[] {
    const result: unknown[] = [];
    this.position += 1;
    this.skipWhitespace();
    if (this.bytes[this.position] === 0x5d) {
      this.position += 1;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      result.push(sparse ? (this.sparseEntry() ?? roundValue(this.value(undefined))) : this.value(undefined));
      this.skipWhitespace();
      const next = this.bytes[this.position];
      this.position += 1;
      if (next === 0x5d) return result;
      if (next !== 0x2c) throw GIVE_UP;
    }
  }

  /**
   * An array of numbers, into a Float32Array (anything else in it: give up). The loop is written
   * out with the number's common form inlined (`-?digits(.digits)?`, at most 2^53 as its digits,
   * at most 22 decimals: Clinger's fast path as in `number`), since a dense vector is ~1,000 of
   * them per text; anything else (exponents, long mantissas) goes through `number`.
   */
  private float32Array(): Float32Array {
    const bytes = this.bytes;
    let values = new Float32Array(1024);
    let length = 0;
    let position = this.position + 1;
    let byte = bytes[position]!;
    while (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) byte = bytes[++position]!;
    if (byte === 0x5d) {
      this.position = position + 1;
      return values.subarray(0, 0);
    }
    for (;;) {
      while (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) byte = bytes[++position]!;
      if (length === values.length) {
        const grown = new Float32Array(values.length * 2);
        grown.set(values);
        values = grown;
      }
      const start = position;
      const negative = byte === 0x2d;
      if (negative) byte = bytes[++position]!;
      let mantissa = 0;
      let scale = 0;
      if (byte === 0x30) {
        byte = bytes[++position]!;
      } else if (byte >= 0x31 && byte <= 0x39) {
        do {
          mantissa = mantissa * 10 + (byte - 0x30);
          byte = bytes[++position]!;
        } while (byte >= 0x30 && byte <= 0x39);
      } else {
        throw GIVE_UP;
      }
      if (byte === 0x2e) {
        // Four digits a step while four follow (a 16-digit fraction takes four steps, a quarter of
        // the dependent multiply-adds). While the mantissa stays below 2^53 every step is exact,
        // as the digit-by-digit sum is; past it, it rounds less often than that sum did. Bytes
        // past the end read as undefined, and NaN fails the digit test.
        const fractionStart = position + 1;
        for (;;) {
          const d1 = bytes[position + 1]! - 0x30;
          const d2 = bytes[position + 2]! - 0x30;
          const d3 = bytes[position + 3]! - 0x30;
          const d4 = bytes[position + 4]! - 0x30;
          if (d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9 && d3 >= 0 && d3 <= 9 && d4 >= 0 && d4 <= 9) {
            mantissa = mantissa * 10000 + (((d1 * 10 + d2) * 10 + d3) * 10 + d4);
            position += 4;
            continue;
          }
          if (!(d1 >= 0 && d1 <= 9)) break;
          mantissa = mantissa * 10 + d1;
          position += 1;
          if (!(d2 >= 0 && d2 <= 9)) break;
          mantissa = mantissa * 10 + d2;
          position += 1;
          if (!(d3 >= 0 && d3 <= 9)) break;
          mantissa = mantissa * 10 + d3;
          position += 1;
          break;
        }
        position += 1;
        scale = position - fractionStart;
        if (scale === 0) throw GIVE_UP;
        byte = bytes[position]!;
      }
      if (byte !== 0x65 && byte !== 0x45 && scale <= 22 && (mantissa < MAX_EXACT || position - start <= MAX_APPROXIMATE_DIGITS)) {
        const magnitude = mantissa < MAX_EXACT ? mantissa / POWERS_OF_TEN[scale]! : float32Of(mantissa / POWERS_OF_TEN[scale]!);
        if (magnitude !== magnitude) {
          // The margin straddles a float32 rounding boundary (or overflows): let the exact path decide.
          this.position = start;
          values[length++] = this.float32Slot();
          position = this.position;
          byte = bytes[position]!;
        } else {
          values[length++] = negative ? -magnitude : magnitude;
        }
      } else {
        this.position = start;
        values[length++] = this.float32Slot();
        position = this.position;
        byte = bytes[position]!;
      }
      while (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) byte = bytes[++position]!;
      position += 1;
      if (byte === 0x5d) {
        this.position = position;
        return length === values.length ? values : values.slice(0, length);
      }
      if (byte !== 0x2c) throw GIVE_UP;
      byte = bytes[position]!;
    }
  }

  /**
   * `{"index":<digits>,"value":<number>,"token":"<no escapes>"}` exactly, as DashScope writes it,
   * into the object JSON.parse would build (value rounded to float32); undefined, position
   * unchanged, for anything else.
   */
  private sparseEntry(): { index: number; value: number; token: string } | undefined {
    const bytes = this.bytes;
    const start = this.position;
    if (!this.matches(start, SPARSE_OPEN)) return undefined;
    let position = start + SPARSE_OPEN.length;
    let byte = bytes[position]!;
    if (!(byte >= 0x31 && byte <= 0x39) && !(byte === 0x30 && bytes[position + 1] === 0x2c)) return undefined;
    let index = 0;
    do {
      index = index * 10 + (byte - 0x30);
      byte = bytes[++position]!;
    } while (byte >= 0x30 && byte <= 0x39);
    if (index >= MAX_EXACT || !this.matches(position, SPARSE_VALUE)) return undefined;
    this.position = position + SPARSE_VALUE.length;
    const value = this.number(true);
    position = this.position;
    if (!this.matches(position, SPARSE_TOKEN)) {
      this.position = start;
      return undefined;
    }
    position += SPARSE_TOKEN.length;
    const tokenStart = position;
    let hash = 0;
    let ascii = true;
    for (;;) {
      byte = bytes[position]!;
      if (byte === 0x22) break;
      if (byte === 0x5c) {
        // Escapes (a token with a quote or backslash): the string reader handles them.
        this.position = tokenStart - 1;
        const token = this.string();
        if (bytes[this.position] !== 0x7d) {
          this.position = start;
          return undefined;
        }
        this.position += 1;
        return { index, value, token };
      }
      if (byte === undefined || byte < 0x20) {
        this.position = start;
        return undefined;
      }
      if (byte >= 0x80) ascii = false;
      hash = Math.imul(hash ^ byte, 0x01000193);
      position += 1;
    }
    if (bytes[position + 1] !== 0x7d) {
      this.position = start;
      return undefined;
    }
    this.position = position + 2;
    return { index, value, token: this.token(tokenStart, position, ascii, hash) };
  }

  /** A token's text; short ASCII ones come from the cache when the same bytes were seen before. */
  private token(start: number, end: number, ascii: boolean, hash: number): string {
    const length = end - start;
    if (!ascii || length > MAX_CACHED_TOKEN_BYTES) return this.buffer.toString(ascii ? 'latin1' : 'utf8', start, end);
    const slot = (hash >>> 0) & (TOKEN_CACHE_SIZE - 1);
    const cached = this.tokenCache[slot];
    if (cached !== undefined && cached.length === length) {
      let same = true;
      for (let offset = 0; offset < length; offset += 1) {
        if (cached.charCodeAt(offset) !== this.bytes[start + offset]) {
          same = false;
          break;
        }
      }
      if (same) return cached;
    }
    const text = this.buffer.toString('latin1', start, end);
    this.tokenCache[slot] = text;
    return text;
  }

  private matches(position: number, expected: Uint8Array): boolean {
    const bytes = this.bytes;
    for (let offset = 0; offset < expected.length; offset += 1) if (bytes[position + offset] !== expected[offset]) return false;
    return true;
  }

  /**
   * A key: the few names DashScope's bodies repeat thousands of times come back as shared constant
   * strings instead of a new string each time.
   */
  private key(): string {
    const bytes = this.bytes;
    const start = this.position + 1;
    for (const known of KNOWN_KEYS) {
      const end = start + known.length;
      if (bytes[end] !== 0x22) continue;
      let same = true;
      for (let index = 0; index < known.length; index += 1) {
        if (bytes[start + index] !== known.charCodeAt(index)) {
          same = false;
          break;
        }
      }
      if (same) {
        this.position = end + 1;
        return known;
      }
    }
    return this.string();
  }

  private string(): string {
    const bytes = this.bytes;
    const start = this.position + 1;
    let position = start;
    let ascii = true;
    for (;;) {
      const byte = bytes[position];
      if (byte === undefined || byte < 0x20) throw GIVE_UP;
      if (byte === 0x22) break;
      if (byte === 0x5c) return this.escapedString(start);
      if (byte >= 0x80) ascii = false;
      position += 1;
    }
    this.position = position + 1;
    return ascii ? this.buffer.toString('latin1', start, position) : this.buffer.toString('utf8', start, position);
  }

  /** Strings with escapes are rare here (tokens with quotes or backslashes): let JSON.parse read them. */
  private escapedString(start: number): string {
    const bytes = this.bytes;
    let position = start;
    for (;;) {
      const byte = bytes[position];
      if (byte === undefined) throw GIVE_UP;
      if (byte === 0x5c) position += 2;
      else if (byte === 0x22) break;
      else position += 1;
    }
    this.position = position + 1;
    try {
      return JSON.parse(this.buffer.toString('utf8', start - 1, position + 1)) as string;
    } catch {
      throw GIVE_UP;
    }
  }

  private literal<T>(text: string, value: T): T {
    for (let index = 0; index < text.length; index += 1) {
      if (this.bytes[this.position + index] !== text.charCodeAt(index)) throw GIVE_UP;
    }
    this.position += text.length;
    return value;
  }

  /** A number for a Float32Array slot, rounded as storing it would; one beyond float32 gives up. */
  private float32Slot(): number {
    const value = Math.fround(this.number());
    if (value === Infinity || value === -Infinity) throw GIVE_UP;
    return value;
  }

  /** A number; with `float32`, rounded to float32 as `Math.fround(JSON.parse(text))` would be. */
  private number(float32 = false): number {
    const bytes = this.bytes;
    const start = this.position;
    let position = start;
    let negative = false;
    if (bytes[position] === 0x2d) {
      negative = true;
      position += 1;
    }
    let mantissa = 0;
    let scale = 0; // power of ten to divide by
    let byte = bytes[position];
    if (byte === 0x30) {
      position += 1;
      byte = bytes[position];
    } else if (byte !== undefined && byte >= 0x31 && byte <= 0x39) {
      while (byte !== undefined && byte >= 0x30 && byte <= 0x39) {
        mantissa = mantissa * 10 + (byte - 0x30);
        position += 1;
        byte = bytes[position];
      }
    } else {
      throw GIVE_UP;
    }
    if (byte === 0x2e) {
      position += 1;
      byte = bytes[position];
      if (byte === undefined || byte < 0x30 || byte > 0x39) throw GIVE_UP;
      while (byte !== undefined && byte >= 0x30 && byte <= 0x39) {
        mantissa = mantissa * 10 + (byte - 0x30);
        scale += 1;
        position += 1;
        byte = bytes[position];
      }
    }
    let exponent = 0;
    if (byte === 0x65 || byte === 0x45) {
      position += 1;
      byte = bytes[position];
      let exponentNegative = false;
      if (byte === 0x2d || byte === 0x2b) {
        exponentNegative = byte === 0x2d;
        position += 1;
        byte = bytes[position];
      }
      if (byte === undefined || byte < 0x30 || byte > 0x39) throw GIVE_UP;
      while (byte !== undefined && byte >= 0x30 && byte <= 0x39) {
        exponent = exponent * 10 + (byte - 0x30);
        position += 1;
        byte = bytes[position];
      }
      if (exponentNegative) exponent = -exponent;
    }
    this.position = position;
    const power = exponent - scale;
    let result = NaN;
    if (power >= -22 && power <= 22) {
      const scaled = power < 0 ? mantissa / POWERS_OF_TEN[-power]! : mantissa * POWERS_OF_TEN[power]!;
      // Every partial mantissa is smaller than the final one, so all were exact when it is below 2^53.
      if (mantissa < MAX_EXACT) result = float32 ? Math.fround(scaled) : scaled;
      else if (float32 && position - start <= MAX_APPROXIMATE_DIGITS) result = float32Of(scaled);
    }
    if (result !== result) {
      result = Number(this.buffer.toString('latin1', negative ? start + 1 : start, position));
      if (float32) result = Math.fround(result);
    }
    return negative ? -result : result;
  }
}

/**
 * The float32 of a non-negative double known only to within a few parts in 2^53 (see
 * parseJsonBytes): the float32 every double within a margin of 2^-45 around it rounds to, or NaN
 * when the margin straddles a rounding boundary (about one number in two million) or the result
 * overflows to Infinity, and the caller must be exact.
 */
function float32Of(approximate: number): number {
  const margin = approximate * MARGIN;
  const low = Math.fround(approximate - margin);
  return low === Math.fround(approximate + margin) && low !== Infinity ? low : NaN;
}

/** A sparse entry read as plain JSON: its `value`, if a number, rounded to float32 like the usual shape's. */
function roundValue(entry: unknown): unknown {
  if (entry !== null && typeof entry === 'object' && typeof (entry as { value?: unknown }).value === 'number') {
    (entry as { value: number }).value = Math.fround((entry as { value: number }).value);
  }
  return entry;
}
