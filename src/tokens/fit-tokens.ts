import type { Tokenizer } from './count-tokens.js';

/** What {@link fitToTokenLimit} found. */
export interface TokenFit {
  /** The text, cut to at most `maxTokens` tokens when it had more. */
  text: string;
  /** More than `maxTokens` tokens. */
  exceeded: boolean;
  /** Tokens counted: the exact count when `exact`, otherwise a lower bound (already over the limit). */
  tokens: number;
  exact: boolean;
}

/**
 * Counts and, if needed, truncates a text to `maxTokens` tokens while tokenizing only as much of
 * it as that takes. The exact Qwen BPE costs ~1 µs a character on prose but ~40 µs on long runs
 * without spaces (a 1 MB line: ~40 s), and no line needs more than its first `maxTokens` tokens:
 * prefixes from `4 × maxTokens` characters, doubling, are encoded until one has more than
 * `maxTokens` tokens (then that prefix is truncated) or the whole text was read (then it fits).
 *
 * The result re-encodes to at most `maxTokens` tokens and depends only on the text, so re-runs
 * agree. (BPE merges near the prefix's end can differ from the whole text's, but that is
 * thousands of tokens past the cut.)
 */
export function fitToTokenLimit(tokenizer: Tokenizer, text: string, maxTokens: number): TokenFit {
  let length = Math.min(text.length, Math.max(64, maxTokens * 4));
  for (;;) {
    // Never cut between the two halves of a surrogate pair.
    if (length < text.length && isHighSurrogate(text.charCodeAt(length - 1))) length += 1;
    const prefix = length === text.length ? text : text.slice(0, length);
    const tokens = tokenizer.countTokens(prefix);
    const exact = length === text.length;
    if (tokens > maxTokens) return { text: tokenizer.truncateToTokens(prefix, maxTokens), exceeded: true, tokens, exact };
    if (exact) return { text, exceeded: false, tokens, exact };
    length = Math.min(text.length, length * 2);
  }
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}
