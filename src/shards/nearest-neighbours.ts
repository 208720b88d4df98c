import type { OutputFormat } from './shard-row.js';
import { denseMatrix, readShard } from './read-shard.js';

export interface Neighbour {
  row: number;
  text: string;
  /** Cosine similarity. */
  score: number;
}

/** Brute-force cosine search over the dense column of written shards (the demo's query). */
export function nearestNeighbours(shards: readonly Uint8Array[], format: OutputFormat, query: Float32Array, k: number): Neighbour[] {
  const queryNorm = Math.hypot(...query);
  const best: Neighbour[] = [];
  for (const bytes of shards) {
    const table = readShard(bytes, format);
    const matrix = denseMatrix(table);
    const texts = table.getChild('text');
    for (let index = 0; index < matrix.rows.length; index += 1) {
      const offset = index * matrix.dimension;
      let dot = 0;
      let norm = 0;
      for (let d = 0; d < matrix.dimension; d += 1) {
        const value = matrix.values[offset + d]!;
        dot += value * query[d]!;
        norm += value * value;
      }
      const score = dot / (Math.sqrt(norm) * queryNorm || 1);
      if (best.length < k || score > best[best.length - 1]!.score) {
        best.push({ row: matrix.rows[index]!, text: String(texts?.get(matrix.tableIndices[index]!) ?? ''), score });
        best.sort((a, b) => b.score - a.score);
        if (best.length > k) best.pop();
      }
    }
  }
  return best;
}
