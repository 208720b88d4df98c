import { Field, FixedSizeList, Float32, Int32, Int64, List, Schema, Struct, Utf8 } from 'apache-arrow';

/**
 * The Arrow schema of every shard (DESIGN "Contract", output columns).
 *
 * The schema is the same for every output type: a dense-only shard still has a `sparse`
 * column (all null) and a sparse-only shard a `dense` column (all null), so shards of
 * different jobs can be read together by one query.
 *
 * Inner fields (`item`, struct members) are non-nullable: a vector that exists is complete.
 *
 * @param dimension length of each dense vector (the `fixed_size_list` size)
 */
export function shardSchema(dimension: number): Schema {
  return new Schema([
    new Field('row', new Int64(), false),
    new Field('source', new Utf8(), false),
    new Field('line', new Int64(), false),
    new Field('id', new Utf8(), true),
    new Field('text', new Utf8(), false),
    new Field('dense', denseType(dimension), true),
    new Field('sparse', sparseType(), true),
    // SHA-256 content key (src/reuse/content-key.ts) as 64 hex digits; the next `--reuse` run reads
    // only this column (plus source/line/id) to find what it need not embed again. Null until filled.
    new Field('content_hash', new Utf8(), true),
  ]);
}

/** `fixed_size_list<float32>[dimension]` */
export function denseType(dimension: number): FixedSizeList<Float32> {
  return new FixedSizeList(dimension, new Field('item', new Float32(), false));
}

/** `struct<index: int32, value: float32, token: utf8>`: one entry as DashScope returns it. */
export function sparseEntryType(): Struct<{ index: Int32; value: Float32; token: Utf8 }> {
  return new Struct([
    new Field('index', new Int32(), false),
    new Field('value', new Float32(), false),
    new Field('token', new Utf8(), false),
  ]);
}

/** `list<struct<index: int32, value: float32, token: utf8>>` */
export function sparseType(): List<Struct<{ index: Int32; value: Float32; token: Utf8 }>> {
  return new List(new Field('item', sparseEntryType(), false));
}
