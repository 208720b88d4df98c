/**
 * The batching rule, shared by the producer (`split-corpus`) and `embedq plan` so the plan counts
 * exactly the requests the run will send: an embeddable line joins the current batch unless that
 * batch is full or belongs to an earlier shard. Batches never cross a shard, so a shard's file
 * depends on its own rows only. Pure.
 */
export interface BatchSlot {
  shard: number;
  /** Batch number inside the shard, from 0. */
  batch: number;
  /** Position of the line inside its batch, from 0; 0 starts a new batch (a new request). */
  position: number;
}

export interface BatchLimits {
  shardRows: number;
  maxTextsPerRequest: number;
}

/** Where the embeddable line at global `row` goes, given where the previous embeddable line went. */
export function placeLine(previous: BatchSlot | undefined, row: number, limits: BatchLimits): BatchSlot {
  const shard = Math.floor(row / limits.shardRows);
  if (!previous || previous.shard !== shard) return { shard, batch: 0, position: 0 };
  if (previous.position + 1 >= limits.maxTextsPerRequest) return { shard, batch: previous.batch + 1, position: 0 };
  return { shard, batch: previous.batch, position: previous.position + 1 };
}

/** The shard a row belongs to (blank and invalid lines too). */
export function shardOfRow(row: number, shardRows: number): number {
  return Math.floor(row / shardRows);
}
