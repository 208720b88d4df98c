import { describe, expect, it } from 'vitest';

import { loadTokenizer } from '../../src/tokens/count-tokens.js';
import { fitToTokenLimit } from '../../src/tokens/fit-tokens.js';
import { closeTokenThread, fitTokensOffThread } from '../../src/tokens/token-worker.js';

describe('fitToTokenLimit', () => {
  it('counts a text that fits exactly and leaves it alone', async () => {
    const tokenizer = await loadTokenizer();
    const text = 'Line 1: the river near the ledger. '.repeat(200);
    const fit = fitToTokenLimit(tokenizer, text, 8192);
    expect(fit).toEqual({ text, exceeded: false, tokens: tokenizer.countTokens(text), exact: true });
  });

  it('cuts a long text to the limit from a prefix, without tokenizing all of it', async () => {
    const tokenizer = await loadTokenizer();
    // 200,000 digits: one token each, so the first 32,768-character prefix already decides.
    const text = '7'.repeat(200_000);
    const fit = fitToTokenLimit(tokenizer, text, 8192);
    expect(fit.exceeded).toBe(true);
    expect(fit.exact).toBe(false);
    expect(fit.tokens).toBeGreaterThan(8192);
    expect(tokenizer.countTokens(fit.text)).toBeLessThanOrEqual(8192);
    expect(tokenizer.countTokens(fit.text)).toBeGreaterThan(8180);
    expect(text.startsWith(fit.text)).toBe(true);
  });

  it('cuts a text in another Unicode form than NFC to a prefix of itself (it was stored composed, as the tokenizer normalizes)', async () => {
    const tokenizer = await loadTokenizer();
    const decomposed = 'cafe\u0301 '.repeat(12_000);
    const fit = fitToTokenLimit(tokenizer, decomposed, 8192);
    expect(fit.exceeded).toBe(true);
    expect(decomposed.startsWith(fit.text)).toBe(true);
    expect(fit.text.normalize('NFC')).not.toBe(fit.text);
    expect(tokenizer.countTokens(fit.text)).toBeLessThanOrEqual(8192);
    expect(tokenizer.countTokens(fit.text)).toBeGreaterThan(8180);
  });

  it('doubles the prefix when the first one fits but the text goes on', async () => {
    const tokenizer = await loadTokenizer();
    // Long runs of spaces pack many characters into a token: 40,000 characters of them fit in the
    // first prefix's budget, the digits after them do not.
    const text = `${' '.repeat(40_000)}${'5'.repeat(20_000)}`;
    const fit = fitToTokenLimit(tokenizer, text, 8192);
    expect(fit.exceeded).toBe(true);
    expect(tokenizer.countTokens(fit.text)).toBeLessThanOrEqual(8192);
    expect(fit.text.length).toBeGreaterThan(40_000);
  });

  it('runs on the token thread with the same result', async () => {
    const tokenizer = await loadTokenizer();
    const text = `${'lorem ipsum '.repeat(5_000)}`;
    try {
      expect(await fitTokensOffThread(text, 1000)).toEqual(fitToTokenLimit(tokenizer, text, 1000));
    } finally {
      await closeTokenThread();
    }
  });
});
