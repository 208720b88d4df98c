import type { SparseEntry } from '../../src/embedding.js';
import type { ShardRow } from '../../src/shards/shard-row.js';

/** What {@link makeShardRows} puts in the rows. */
export interface ShardRowsOptions {
  dimension: number;
  /** Give rows a dense vector. Default true. */
  dense?: boolean;
  /** Give rows a sparse vector. Default true. */
  sparse?: boolean;
  /** Number of the first row. Default 0. */
  firstRow?: number;
  /** Sparse entries per row. Default 5. */
  sparseEntries?: number;
}

/**
 * Deterministic rows for shard and codec tests. The values are awkward on purpose: -0,
 * subnormal and extreme float32s, empty sparse lists, null ids, Chinese, emoji and quotes.
 * Sparse values are float32 already (what a shard stores), so exact equality holds.
 */
export function makeShardRows(count: number, options: ShardRowsOptions): ShardRow[] {
  const { dimension, firstRow = 0, sparseEntries = 5 } = options;
  const random = mulberry32(firstRow + 1);
  const specials = [-0, 0, 1.401298464324817e-45, -3.4028234663852886e38, 3.4028234663852886e38, 1e-40, 1];
  const texts = ['the quick brown fox', '中文文本：向量检索', 'emoji 🙂🚀 and "quotes"', 'tab\tnew\\line', ''];
  const tokens = ['the', '▁quick', '中文', '🙂', 'x', "it's"];
  return Array.from({ length: count }, (_, i): ShardRow => {
    const dense = options.dense === false ? null : new Float32Array(dimension);
    if (dense) {
      for (let d = 0; d < dimension; d++) {
        dense[d] = (d + i) % 97 === 0 ? specials[(d + i) % specials.length]! : random() * 2 - 1;
      }
    }
    let sparse: SparseEntry[] | null = null;
    if (options.sparse !== false) {
      const n = i % 7 === 3 ? 0 : sparseEntries; // some empty lists
      sparse = Array.from({ length: n }, (_, j) => ({
        index: Math.floor(random() * 250_000),
        value: Math.fround(random() * 4),
        token: tokens[(i + j) % tokens.length]!,
      }));
    }
    return {
      row: firstRow + i,
      source: i < count / 2 ? 's3://corpus/a.jsonl' : 'corpus/b 中文.txt',
      line: i * 2,
      id: i % 5 === 2 ? null : `doc-${i}`,
      text: `${texts[i % texts.length]!} #${i}`,
      dense,
      sparse,
    };
  });
}

function mulberry32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The bytes of a Float32Array, for bit-exact comparison (-0 and 0 differ). */
export function float32Bytes(values: ArrayLike<number>): Buffer {
  const copy = Float32Array.from(values);
  return Buffer.from(copy.buffer, copy.byteOffset, copy.byteLength);
}
