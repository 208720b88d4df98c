import { beforeAll, describe, expect, it } from 'vitest';

import { estimateTokens, loadTokenizer, mayExceedTokens, type Tokenizer, utf8ByteLength } from '../../src/tokens/count-tokens.js';

describe('estimateTokens', () => {
  it.each([
    ['', 1],
    ['a', 2], // ceil(1/3) + 1
    ['hello world', 5], // ceil(11/3) + 1
    ['风急天高猿啸哀', 8], // 7 CJK + 1
    ['风急 hi', 4], // 2 CJK + ceil(3/3) + 1
    ['\u{20000}\u{20001}', 3], // CJK Extension B (surrogate pairs) count 1 each
    ['😀😀😀', 2], // an emoji is "other": 3 of them, ceil(3/3) + 1
    ['こんにちは', 6], // Hiragana counts 1 each
  ])('estimates %j as %i', (text, expected) => {
    expect(estimateTokens(text)).toBe(expected);
  });
});

describe('mayExceedTokens', () => {
  it.each([
    ['a'.repeat(1365), 8192, false], // fast path: 1365 × 6 ≤ 8192
    ['a'.repeat(8192), 8192, false], // 8192 bytes cannot make more than 8192 tokens
    ['a'.repeat(8193), 8192, true],
    ['风'.repeat(2730), 8192, false], // 8190 bytes
    ['风'.repeat(2731), 8192, true], // 8193 bytes
    ['\u0958'.repeat(2000), 8192, true], // 6000 bytes, but 12000 after NFC
    ['é'.repeat(4000), 8192, false], // 8000 bytes, NFC keeps it
    ['short', 3, true],
    ['a'.repeat(5000), 8192, false], // 5000 bytes, ASCII: NFC cannot grow it
  ])('case %#', (text, limit, expected) => {
    expect(mayExceedTokens(text, limit)).toBe(expected);
  });

  it('counts UTF-8 bytes', () => {
    expect(utf8ByteLength('héllo 风')).toBe(10);
  });
});

describe('Qwen tokenizer', () => {
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    tokenizer = await loadTokenizer();
  });

  it('loads once', async () => {
    expect(await loadTokenizer()).toBe(tokenizer);
  });

  it('matches the DashScope tokenizer API sample and the facts-sheet counts', () => {
    // POST /api/v1/tokenizer: "代码改变世界" → [46100, 101933, 99489] (facts §6).
    expect(tokenizer.encode('代码改变世界')).toEqual([46100, 101933, 99489]);
    expect(tokenizer.countTokens('衣服的质量杠杠的')).toBe(5);
    expect(tokenizer.countTokens('我想知道迪士尼的退票政策')).toBe(7);
    expect(tokenizer.countTokens('3.14159265358979 2.71828182845904')).toBe(33);
    expect(tokenizer.countTokens('')).toBe(0);
  });

  it('never makes more tokens than UTF-8 bytes on the cases mayExceedTokens lets through', () => {
    for (const text of ['a'.repeat(8192), '风'.repeat(2730), '9 '.repeat(4096), 'é'.repeat(4000)]) {
      expect(tokenizer.countTokens(text)).toBeLessThanOrEqual(8192);
    }
  });

  it('truncates to whole characters and keeps text that fits', () => {
    const text = 'héllo 风急天高猿啸哀';
    // Tokens: h · él · lo · " \xe9\xa3" · "\x8e" … — 风 spans three byte-level tokens.
    expect(tokenizer.truncateToTokens(text, 3)).toBe('héllo');
    expect(tokenizer.truncateToTokens(text, 4)).toBe('héllo ');
    expect(tokenizer.truncateToTokens(text, 5)).toBe('héllo ');
    expect(tokenizer.truncateToTokens(text, 6)).toBe('héllo 风');
    expect(tokenizer.truncateToTokens(text, 100)).toBe(text);
    expect(tokenizer.truncateToTokens(text, 0)).toBe('');
  });

  it('truncates long text to a prefix that fits the limit', () => {
    const text = '9 '.repeat(9000);
    expect(tokenizer.countTokens(text)).toBe(18000);
    const truncated = tokenizer.truncateToTokens(text, 8192);
    expect(text.startsWith(truncated)).toBe(true);
    expect(tokenizer.countTokens(truncated)).toBe(8192);
    expect(truncated).toBe('9 '.repeat(4096));
  });
});
