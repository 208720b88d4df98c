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
 * Returns undefined for anything it does not handle (invalid JSON included); callers then use
 * JSON.parse on the text, which also produces the error message.
 */
export function parseJsonBytes(bytes: Uint8Array, float32Keys: ReadonlySet<string>): unknown {
  const parser = new Parser(bytes, float32Keys);
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
const KNOWN_KEYS = ['index', 'value', 'token', 'text_index', 'embedding', 'sparse_embedding', 'object'];
const POWERS_OF_TEN = Array.from({ length: 23 }, (_, exponent) => 10 ** exponent);
const MAX_EXACT = 2 ** 53;

class Parser {
  position = 0;
  private readonly buffer: Buffer;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly float32Keys: ReadonlySet<string>,
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
    if (byte === 0x5b) return key !== undefined && this.float32Keys.has(key) ? this.float32Array() : this.array();
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

  private array(): unknown[] {
    const result: unknown[] = [];
    this.position += 1;
    this.skipWhitespace();
    if (this.bytes[this.position] === 0x5d) {
      this.position += 1;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      result.push(this.value(undefined));
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
        byte = bytes[++position]!;
        if (!(byte >= 0x30 && byte <= 0x39)) throw GIVE_UP;
        const fractionStart = position;
        do {
          mantissa = mantissa * 10 + (byte - 0x30);
          byte = bytes[++position]!;
        } while (byte >= 0x30 && byte <= 0x39);
        scale = position - fractionStart;
      }
      if (mantissa < MAX_EXACT && scale <= 22 && byte !== 0x65 && byte !== 0x45) {
        const magnitude = mantissa / POWERS_OF_TEN[scale]!;
        values[length++] = negative ? -magnitude : magnitude;
      } else {
        this.position = start;
        values[length++] = this.number();
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

  private number(): number {
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
    let result: number;
    // Every partial mantissa is smaller than the final one, so all were exact when it is below 2^53.
    if (mantissa < MAX_EXACT && power >= -22 && power <= 22) {
      result = power < 0 ? mantissa / POWERS_OF_TEN[-power]! : mantissa * POWERS_OF_TEN[power]!;
    } else {
      result = Number(this.buffer.toString('latin1', negative ? start + 1 : start, position));
    }
    return negative ? -result : result;
  }
}
