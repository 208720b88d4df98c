import { describe, expect, it } from 'vitest';

import { emulatorEmbedding, emulatorTokens, type EmulatorEmbeddingParameters, SPARSE_INDEX_SPACE } from '../../src/emulator/emulator-embedding.js';

const v4: EmulatorEmbeddingParameters = { model: 'text-embedding-v4', dimension: 1024, outputType: 'dense&sparse', textType: 'document' };
const dense = (text: string, parameters: Partial<EmulatorEmbeddingParameters> = {}): Float32Array =>
  emulatorEmbedding(text, { ...v4, ...parameters }).dense!;
const cosine = (left: Float32Array, right: Float32Array): number => {
  let dot = 0;
  let leftSquares = 0;
  let rightSquares = 0;
  for (let index = 0; index < left.length; index++) {
    dot += left[index]! * right[index]!;
    leftSquares += left[index]! ** 2;
    rightSquares += right[index]! ** 2;
  }
  return dot / Math.sqrt(leftSquares * rightSquares);
};

describe('emulatorTokens', () => {
  it('splits words (lowercased) and CJK unigrams plus bigrams', () => {
    expect(emulatorTokens('Hello, World! hello')).toEqual(['hello', 'world']);
    expect(emulatorTokens('风急天高')).toEqual(['风', '急', '风急', '天', '急天', '高', '天高']);
    expect(emulatorTokens('风急 天')).toEqual(['风', '急', '风急', '天']); // no bigram across a space
    expect(emulatorTokens('!!!')).toEqual(['!!!']);
  });
});

describe('emulatorEmbedding', () => {
  it('is deterministic, unit length and float32', () => {
    const first = dense('the quick brown fox');
    expect(first).toEqual(dense('the quick brown fox'));
    expect(first).toBeInstanceOf(Float32Array);
    expect(first).toHaveLength(1024);
    expect(Math.abs(cosine(first, first) - 1)).toBeLessThan(1e-6);
    const length = Math.sqrt(first.reduce((sum, value) => sum + value * value, 0));
    expect(Math.abs(length - 1)).toBeLessThan(1e-5);
  });

  it('gives related texts related vectors', () => {
    const cat = dense('the cat sat on the mat');
    const similar = dense('a cat sat on a mat');
    const unrelated = dense('quarterly revenue grew in asia');
    expect(cosine(cat, similar)).toBeGreaterThan(0.7);
    expect(Math.abs(cosine(cat, unrelated))).toBeLessThan(0.2);
    const poem = dense('风急天高猿啸哀');
    expect(cosine(poem, dense('天高风急'))).toBeGreaterThan(0.4);
    expect(Math.abs(cosine(poem, dense('quarterly revenue')))).toBeLessThan(0.2);
  });

  it('keeps query and document close but different; instruct matters on v4 only', () => {
    const document = dense('the cat sat on the mat');
    const query = dense('the cat sat on the mat', { textType: 'query' });
    expect(query).not.toEqual(document);
    expect(cosine(query, document)).toBeGreaterThan(0.95);
    const instructed = dense('the cat sat on the mat', { textType: 'query', instruct: 'Find similar sentences' });
    expect(instructed).not.toEqual(query);
    const v3 = { model: 'text-embedding-v3' as const };
    expect(dense('x y', { ...v3, instruct: 'anything' })).toEqual(dense('x y', v3));
  });

  it('puts different models in different spaces', () => {
    expect(Math.abs(cosine(dense('the cat sat on the mat'), dense('the cat sat on the mat', { model: 'text-embedding-v3' })))).toBeLessThan(0.2);
  });

  it('makes lower dimensions a prefix before normalising', () => {
    const full = dense('matryoshka dolls nest inside each other', { dimension: 2048 });
    const small = dense('matryoshka dolls nest inside each other', { dimension: 64 });
    const prefix = full.slice(0, 64);
    expect(cosine(prefix, small)).toBeGreaterThan(0.999999);
  });

  it('returns sorted sparse entries with float32 values, one per distinct token', () => {
    const { sparse, dense: none } = emulatorEmbedding('Wind wind sky', { ...v4, outputType: 'sparse' });
    expect(none).toBeNull();
    expect(sparse!.map((entry) => entry.token).sort()).toEqual(['sky', 'wind']);
    expect(sparse!.map((entry) => entry.index)).toEqual([...sparse!.map((entry) => entry.index)].sort((a, b) => a - b));
    for (const entry of sparse!) {
      expect(entry.value).toBe(Math.fround(entry.value));
      expect(entry.index).toBeGreaterThanOrEqual(0);
      expect(entry.index).toBeLessThan(SPARSE_INDEX_SPACE);
    }
    const wind = sparse!.find((entry) => entry.token === 'wind')!;
    const once = emulatorEmbedding('wind sky', { ...v4, outputType: 'sparse' }).sparse!.find((entry) => entry.token === 'wind')!;
    expect(wind.index).toBe(once.index);
    expect(wind.value).toBe(Math.fround(once.value * (1 + Math.log(2))));
    expect(emulatorEmbedding('x', { ...v4, outputType: 'dense' }).sparse).toBeNull();
  });
});
