import type { SparseEntry } from '../embedding.js';

/** One result item, at its position in the response array. */
export interface ResponseItem {
  /** Position of the text in the request (`text_index` / `index`). */
  index: number;
  dense: Float32Array | null;
  sparse: SparseEntry[] | null;
}

// Success bodies are written straight into bytes. At dimension 1024 a 10-text response holds
// ~10k numbers, and formatting them was most of the emulator's CPU: Number#toString costs
// ~150 ns a number and leaves a string per number for the GC; the digit-pair writer below
// costs a fraction of that and allocates nothing per number.

const DIGIT_PAIRS = new Uint8Array(200);
for (let pair = 0; pair < 100; pair++) {
  DIGIT_PAIRS[pair * 2] = 48 + Math.floor(pair / 10);
  DIGIT_PAIRS[pair * 2 + 1] = 48 + (pair % 10);
}
const encoder = new TextEncoder();

/** A growable byte buffer with the few JSON writers the bodies need. */
class JsonBytes {
  private bytes: Uint8Array;
  private length = 0;

  constructor(capacity: number) {
    this.bytes = new Uint8Array(Math.max(256, capacity));
  }

  /** Appends a string known to be ASCII (punctuation, keys, numbers). */
  ascii(text: string): this {
    this.reserve(text.length);
    for (let index = 0; index < text.length; index++) this.bytes[this.length++] = text.charCodeAt(index);
    return this;
  }

  /** Appends any value as JSON (for strings with arbitrary characters). */
  json(value: unknown): this {
    const text = JSON.stringify(value);
    this.reserve(text.length * 3);
    this.length += encoder.encodeInto(text, this.bytes.subarray(this.length)).written;
    return this;
  }

  /**
   * Appends a float32 value the way DashScope's bodies look (`-0.0238461103290319`: 16 decimals,
   * ~19 characters, so a client's JSON.parse does realistic work). Exact: 16 decimals are within
   * 1e-16 of the value, far inside half a float32 ulp for |value| ≥ 1e-6, so
   * `Math.fround(Number(text))` gives the value back bit for bit. Magnitudes outside [1e-6, 1)
   * (rare in a unit vector) fall back to Number#toString.
   */
  float32(value: number): this {
    const magnitude = value < 0 ? -value : value;
    if (magnitude >= 1 || magnitude < 1e-6) return this.ascii(magnitude === 0 ? '0.0' : String(value));
    const scaled = magnitude * 1e8;
    let high = Math.floor(scaled);
    let low = Math.round((scaled - high) * 1e8);
    if (low === 1e8) {
      high += 1;
      low = 0;
    }
    if (high >= 1e8) return this.ascii(String(value));
    this.reserve(19);
    if (value < 0) this.bytes[this.length++] = 45; // '-'
    this.bytes[this.length++] = 48; // '0'
    this.bytes[this.length++] = 46; // '.'
    this.eightDigits(high);
    this.eightDigits(low);
    return this;
  }

  /** The bytes written so far (a view, not a copy). */
  result(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }

  /** Writes 0 ≤ value < 1e8 as exactly eight digits, two at a time. */
  private eightDigits(value: number): void {
    const bytes = this.bytes;
    let position = this.length + 6;
    for (let pairs = 0; pairs < 4; pairs++) {
      const pair = value % 100;
      value = (value - pair) / 100;
      bytes[position] = DIGIT_PAIRS[pair * 2]!;
      bytes[position + 1] = DIGIT_PAIRS[pair * 2 + 1]!;
      position -= 2;
    }
    this.length += 8;
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + extra));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }
}

/** The text {@link JsonBytes.float32} writes for a value (for tests and debugging). */
export function formatFloat32(value: number): string {
  return Buffer.from(new JsonBytes(32).float32(value).result()).toString('latin1');
}

function writeDense(out: JsonBytes, dense: Float32Array): void {
  out.ascii('[');
  for (let index = 0; index < dense.length; index++) {
    if (index > 0) out.ascii(',');
    out.float32(dense[index]!);
  }
  out.ascii(']');
}

function writeSparse(out: JsonBytes, sparse: readonly SparseEntry[]): void {
  out.ascii('[');
  for (let position = 0; position < sparse.length; position++) {
    const entry = sparse[position]!;
    // Sparse values are few; Number#toString keeps them exactly as float32-widened doubles.
    out.ascii(`${position > 0 ? ',' : ''}{"index":${entry.index},"value":${entry.value},"token":`).json(entry.token).ascii('}');
  }
  out.ascii(']');
}

/** Rough size of a body, so the buffer rarely grows. */
function estimateBytes(items: readonly ResponseItem[]): number {
  let size = 256;
  for (const item of items) size += 64 + (item.dense ? item.dense.length * 20 : 0) + (item.sparse ? item.sparse.length * 56 : 0);
  return size;
}

/** The native success body: `{output:{embeddings:[…]}, usage:{total_tokens}, request_id}`. */
export function nativeSuccessBody(items: readonly ResponseItem[], totalTokens: number, requestId: string): Uint8Array {
  const out = new JsonBytes(estimateBytes(items)).ascii('{"output":{"embeddings":[');
  items.forEach((item, position) => {
    out.ascii(`${position > 0 ? ',' : ''}{"text_index":${item.index}`);
    if (item.dense) {
      out.ascii(',"embedding":');
      writeDense(out, item.dense);
    }
    if (item.sparse) {
      out.ascii(',"sparse_embedding":');
      writeSparse(out, item.sparse);
    }
    out.ascii('}');
  });
  return out.ascii(`]},"usage":{"total_tokens":${totalTokens}},"request_id":`).json(requestId).ascii('}').result();
}

/** The OpenAI-compatible success body: `{data:[…], model, object:'list', usage, id}`. */
export function compatSuccessBody(items: readonly ResponseItem[], model: string, totalTokens: number, requestId: string): Uint8Array {
  const out = new JsonBytes(estimateBytes(items)).ascii('{"data":[');
  items.forEach((item, position) => {
    out.ascii(position > 0 ? ',{"embedding":' : '{"embedding":');
    writeDense(out, item.dense ?? new Float32Array(0));
    out.ascii(`,"index":${item.index},"object":"embedding"}`);
  });
  out.ascii('],"model":').json(model).ascii(',"object":"list",');
  return out.ascii(`"usage":{"prompt_tokens":${totalTokens},"total_tokens":${totalTokens}},"id":`).json(requestId).ascii('}').result();
}
