/**
 * The shard writer's sizes in rows or batches (row groups, slices read from Redis) are set for
 * dimension 1024, where they hold about 4 MB of dense floats. Above it they shrink in proportion,
 * so a wider vector does not make a group or a slice, and the memory that holds it, larger.
 */
const SIZED_AT_DIMENSION = 1024;

/** `count` up to dimension 1024; above it, `count × 1024 / dimension` rounded down, but not below `minimum`. */
export function sizeForDimension(count: number, dimension: number, minimum: number): number {
  return Math.max(minimum, Math.min(count, Math.floor((count * SIZED_AT_DIMENSION) / dimension)));
}
