import type { EmbeddingParameters, SparseEntry } from '../embedding.js';
import { MODELS, wantsDense, wantsSparse } from '../models.js';

/**
 * The emulator's vectors: deterministic functions of (model, dimension, text type, instruct, text)
 * that behave like embeddings where a demo or a test can see it.
 *
 * - Text → tokens: lowercased words (runs of letters, digits and marks), plus CJK characters as
 *   unigrams and adjacent-pair bigrams (Chinese has no spaces, so bigrams carry the "words").
 * - Dense: the L2-normalised, weighted sum of one pseudo-random vector per distinct token
 *   (weight × (1 + ln tf)), so texts sharing words get a high cosine. Each token vector is a
 *   prefix-stable stream seeded by (model, token): a lower dimension is a prefix of a higher one
 *   before normalising (Matryoshka-like), and different models live in unrelated spaces.
 *   A small vector seeded by (text type, instruct) is mixed in at 15 % of the sum's length, so a
 *   query and a document of the same text differ slightly (cosine ≈ 0.98) but stay close.
 * - Sparse: one entry per distinct token, index = stable hash mod 150,000 (model independent,
 *   like a vocabulary), value = weight × (1 + ln tf); sorted by index. Two tokens of one text
 *   that hash to the same index are merged (values summed, the heavier token's string kept).
 * - Every value is rounded to float32, so a client's Float32Array equals ours bit for bit.
 *
 * `instruct` only affects text-embedding-v4 (v3 ignores it, as it ignores unknown parameters).
 */
export type EmulatorEmbeddingParameters = Pick<EmbeddingParameters, 'model' | 'dimension' | 'outputType' | 'textType' | 'instruct'>;

/** Dense and/or sparse vectors of one text; the one not asked for is null. */
export interface EmulatorVectors {
  dense: Float32Array | null;
  sparse: SparseEntry[] | null;
}

/** Size of the sparse index space (Qwen's vocabulary has ~151k entries). */
export const SPARSE_INDEX_SPACE = 150_000;
/** Length of the (text type, instruct) perturbation relative to the token sum. */
const PERTURBATION_SCALE = 0.15;

/** Computes the vectors the emulator returns for one text. Pure, apart from a bounded cache. */
export function emulatorEmbedding(text: string, parameters: EmulatorEmbeddingParameters): EmulatorVectors {
  const terms = countTerms(text);
  return {
    dense: wantsDense(parameters.outputType) ? denseVector(terms, parameters) : null,
    sparse: wantsSparse(parameters.outputType) ? sparseVector(terms) : null,
  };
}

type TermKind = 0 | 1 | 2; // word, CJK unigram, CJK bigram

interface Term {
  count: number;
  kind: TermKind;
}

const CJK_CHAR = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]/u;
// One CJK character, or a run of anything that is not space, punctuation, symbol or CJK.
const TERM_PATTERN = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]|[^\s\p{P}\p{S}\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]+/gu;

/** The emulator's distinct tokens of a text, in order of first appearance (a CJK bigram follows its second character). */
export function emulatorTokens(text: string): string[] {
  return [...countTerms(text).keys()];
}

function countTerms(text: string): Map<string, Term> {
  const terms = new Map<string, Term>();
  const add = (token: string, kind: TermKind): void => {
    const term = terms.get(token);
    if (term) term.count++;
    else terms.set(token, { count: 1, kind });
  };
  const lower = text.toLowerCase();
  let previousCjk: string | undefined;
  let previousEnd = -1;
  for (const match of lower.matchAll(TERM_PATTERN)) {
    const token = match[0];
    const start = match.index;
    // A CJK match is one code point (1 or 2 code units); test the pattern only for short matches.
    const isCjk = token.length <= 2 && CJK_CHAR.test(token);
    if (isCjk) {
      add(token, 1);
      if (previousCjk !== undefined && previousEnd === start) add(previousCjk + token, 2);
      previousCjk = token;
    } else {
      add(token, 0);
      previousCjk = undefined;
    }
    previousEnd = start + token.length;
  }
  // Punctuation- or emoji-only text still gets a vector of its own.
  if (terms.size === 0) {
    const trimmed = lower.trim();
    if (trimmed.length > 0) add(trimmed, 0);
  }
  return terms;
}

const STOPWORDS = new Set(
  (
    'a an and are as at be but by for from has have he her his i in is it its me my not of on or our she so that the their them ' +
    'then there these they this to was we were what when which who will with you your 的 了 是 在 和 与 也 就 都 而 及 着 或 一 不 这 那 个 之 其'
  ).split(' '),
);
const BASE_WEIGHT: Record<TermKind, number> = { 0: 1, 1: 0.6, 2: 1 };

/** An idf-like weight: stopwords and single CJK characters count less; the rest vary by ±25 %. */
function termWeight(token: string, kind: TermKind): number {
  const base = STOPWORDS.has(token) ? 0.2 : kind === 0 && token.length <= 2 ? 0.6 : BASE_WEIGHT[kind];
  const jitter = (fnv1a(token, 0x9747b28c) >>> 8) / 0x1000000; // [0, 1)
  return base * (0.75 + 0.5 * jitter);
}

function denseVector(terms: Map<string, Term>, parameters: EmulatorEmbeddingParameters): Float32Array {
  const { model, dimension } = parameters;
  const cache = cacheFor(model);
  const sum = new Float64Array(dimension);
  let squaredFactors = 0;
  for (const [token, term] of terms) {
    const vector = cache.vector(token, dimension);
    const factor = termWeight(token, term.kind) * (1 + Math.log(term.count));
    squaredFactors += factor * factor;
    for (let index = 0; index < dimension; index++) sum[index]! += factor * vector[index]!;
  }
  const instruct = MODELS[model].supportsInstruct ? (parameters.instruct ?? '') : '';
  const perturbation = cache.vector(`\u0000text_type=${parameters.textType}\u0000instruct=${instruct}`, dimension);
  // Token vectors are independent with equal expected length, so the sum's expected length is
  // sqrt(Σ factor²) token-vector lengths. Scaling by that (not by the measured norm) keeps the
  // scale independent of the dimension, so lower dimensions stay an exact prefix.
  const scale = PERTURBATION_SCALE * Math.sqrt(squaredFactors);
  for (let index = 0; index < dimension; index++) sum[index]! += scale * perturbation[index]!;
  const total = norm(sum, dimension) || 1;
  const dense = new Float32Array(dimension);
  for (let index = 0; index < dimension; index++) dense[index] = sum[index]! / total;
  return dense;
}

function sparseVector(terms: Map<string, Term>): SparseEntry[] {
  const byIndex = new Map<number, SparseEntry>();
  for (const [token, term] of terms) {
    const index = fnv1a(token, 0x811c9dc5) % SPARSE_INDEX_SPACE;
    const value = termWeight(token, term.kind) * (1 + Math.log(term.count));
    const existing = byIndex.get(index);
    if (!existing) {
      byIndex.set(index, { index, value, token });
    } else {
      if (value > existing.value || (value === existing.value && token < existing.token)) existing.token = token;
      existing.value += value;
    }
  }
  const entries = [...byIndex.values()].sort((left, right) => left.index - right.index);
  for (const entry of entries) entry.value = Math.fround(entry.value);
  return entries;
}

function norm(vector: ArrayLike<number>, length: number): number {
  let squares = 0;
  for (let index = 0; index < length; index++) squares += vector[index]! * vector[index]!;
  return Math.sqrt(squares);
}

/** 32-bit FNV-1a over UTF-16 code units, with a murmur3 finaliser for better low bits. */
function fnv1a(text: string, seed: number): number {
  let hash = seed >>> 0;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/** The token's pseudo-random vector: a mulberry32 stream in [-1, 1), so any prefix is stable. */
function tokenVector(seed: number, dimension: number): Float32Array {
  const vector = new Float32Array(dimension);
  let state = seed >>> 0;
  for (let index = 0; index < dimension; index++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    vector[index] = ((t ^ (t >>> 14)) >>> 0) / 0x80000000 - 1;
  }
  return vector;
}

/** Float budget of the per-token vector caches, all models together (Default: 16 M floats = 64 MB). */
let cacheBudgetFloats = 16 * 1024 * 1024;

/**
 * Sets the memory budget of the per-token vector cache (megabytes). Zipf's law makes a few
 * thousand tokens cover most of any corpus, and a miss costs ~2–5 µs at dimension 1024.
 */
export function setVectorCacheMegabytes(megabytes: number): void {
  cacheBudgetFloats = Math.max(0, Math.floor((megabytes * 1024 * 1024) / 4));
  caches.clear();
}

/**
 * A bounded two-generation cache (cheaper than a strict LRU: no reordering on hits). When the
 * young generation fills half the budget it becomes the old one and the previous old one is
 * dropped; a hit in the old generation moves the entry back to the young one.
 */
class TokenVectorCache {
  private young = new Map<string, Float32Array>();
  private old = new Map<string, Float32Array>();
  private youngFloats = 0;

  constructor(private readonly modelSeed: number) {}

  vector(token: string, dimension: number): Float32Array {
    let vector = this.young.get(token);
    if (vector && vector.length >= dimension) return vector;
    const older = this.old.get(token);
    if (!vector && older && older.length >= dimension) vector = older;
    else vector = tokenVector(fnv1a(token, this.modelSeed), dimension);
    this.remember(token, vector);
    return vector;
  }

  private remember(token: string, vector: Float32Array): void {
    const budget = cacheBudgetFloats / caches.size / 2;
    const previous = this.young.get(token);
    if (previous) this.youngFloats -= previous.length;
    if (this.youngFloats + vector.length > budget) {
      this.old = this.young;
      this.young = new Map();
      this.youngFloats = 0;
    }
    if (vector.length > budget) return;
    this.young.set(token, vector);
    this.youngFloats += vector.length;
  }
}

const caches = new Map<string, TokenVectorCache>();

function cacheFor(model: string): TokenVectorCache {
  let cache = caches.get(model);
  if (!cache) {
    cache = new TokenVectorCache(fnv1a(model, 0x2545f491));
    caches.set(model, cache);
  }
  return cache;
}
