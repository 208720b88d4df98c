import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DEMO_QUERIES, writeSampleCorpus } from '../../src/demo/sample-corpus.js';

const CJK = /[\u3040-\u30ff\u3400-\u9fff]/;
const NON_BLANK = /\S/;

/** The lines of a file ending in a newline, as the corpus reader numbers them. */
function linesOf(text: string): string[] {
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

describe('writeSampleCorpus', () => {
  let root: string;
  let result: Awaited<ReturnType<typeof writeSampleCorpus>>;
  let articles: string[];
  let reviews: { id: unknown; lang: unknown; text: unknown }[];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'embedq-sample-corpus-'));
    result = await writeSampleCorpus(join(root, 'a', 'nested'));
    articles = linesOf(await readFile(join(root, 'a', 'nested', 'articles.txt'), 'utf8'));
    const jsonl = gunzipSync(await readFile(join(root, 'a', 'nested', 'reviews.jsonl.gz'))).toString('utf8');
    reviews = linesOf(jsonl).map((line) => JSON.parse(line) as { id: unknown; lang: unknown; text: unknown });
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes the same bytes on every run', async () => {
    const again = await writeSampleCorpus(join(root, 'b'));
    expect(again.files.map((file) => basename(file))).toEqual(['articles.txt', 'reviews.jsonl.gz']);
    expect(result.files.map((file) => basename(file))).toEqual(['articles.txt', 'reviews.jsonl.gz']);
    expect({ lines: again.lines, blank: again.blank }).toEqual({ lines: result.lines, blank: result.blank });
    for (const [first, second] of result.files.map((file, index) => [file, again.files[index]!] as const)) {
      expect((await readFile(second)).equals(await readFile(first))).toBe(true);
    }
  });

  it('writes a gzip header without a timestamp', async () => {
    const gzipped = await readFile(result.files[1]!);
    expect([gzipped[0], gzipped[1]]).toEqual([0x1f, 0x8b]);
    expect(gzipped.readUInt32LE(4)).toBe(0);
  });

  it('returns the line counts it wrote', () => {
    expect(articles.length).toBeGreaterThanOrEqual(1_800);
    expect(reviews.length).toBeGreaterThanOrEqual(1_300);
    expect(result.lines).toBe(articles.length + reviews.length);
    const blank = articles.filter((line) => !NON_BLANK.test(line)).length;
    expect(result.blank).toBe(blank);
    expect(blank / articles.length).toBeGreaterThan(0.004);
    expect(blank / articles.length).toBeLessThan(0.02);
  });

  it('writes JSON Lines with a string id and non-empty text', () => {
    for (const review of reviews) {
      expect(review.id).toMatch(/^r-\d{5}$/);
      expect(typeof review.lang).toBe('string');
      expect(typeof review.text).toBe('string');
      expect(NON_BLANK.test(review.text as string)).toBe(true);
    }
    expect(new Set(reviews.map((review) => review.id)).size).toBe(reviews.length);
  });

  it('is multilingual, distinct, and sized like real lines', () => {
    const texts = [...articles.filter((line) => NON_BLANK.test(line)), ...reviews.map((review) => review.text as string)];
    expect(texts.filter((text) => CJK.test(text)).length / texts.length).toBeGreaterThanOrEqual(0.2);
    expect(new Set(reviews.map((review) => review.lang))).toEqual(new Set(['en', 'zh', 'es', 'fr', 'de', 'ja']));
    expect((texts.length - new Set(texts).size) / texts.length).toBeLessThan(0.01);

    const lengths = articles.filter((line) => NON_BLANK.test(line)).map((line) => line.length);
    expect(Math.min(...lengths)).toBeGreaterThanOrEqual(40);
    expect(lengths.filter((length) => length > 400).length).toBeGreaterThanOrEqual(3);
    expect(lengths.filter((length) => length > 400).every((length) => length >= 1_000 && length <= 2_000)).toBe(true);
  });

  it('offers three demo queries', () => {
    expect(DEMO_QUERIES).toHaveLength(3);
    expect(DEMO_QUERIES.some((query) => CJK.test(query))).toBe(true);
  });
});
