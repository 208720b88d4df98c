import type { Readable } from 'node:stream';

/** One object (S3) or file (local folder) under a store. */
export interface StoredObject {
  /** Key relative to the store's root, `/`-separated. */
  key: string;
  sizeBytes: number;
  /**
   * The version `open` would report (OpenedObject.version) when listed or stat'ed: S3 lists each
   * object's ETag and size, so a listing tells versions apart without a request per object.
   */
  version?: string;
}

/** An object opened for reading, and which version of it is being read. */
export interface OpenedObject {
  body: Readable;
  /**
   * Tells versions of one key apart: S3's ETag and size; a local file's inode, size and
   * modification time. A rewrite gives another version (on S3 unless the bytes are the same).
   */
  version: string;
}

export interface WriteOptions {
  /**
   * Aborts the write: its requests in flight are cut (a server stores no object whose body did not
   * arrive whole), nothing appears, and the write throws the signal's reason. A stopped job's
   * upload went on for minutes and landed in the next run's output.
   */
  signal?: AbortSignal | undefined;
}

/**
 * Where corpus objects are read from and output files written to: an S3 bucket or a local folder.
 * Keys are `/`-separated and relative to the store's root (the bucket, or the folder).
 */
export interface ObjectStore {
  /** For messages: `s3://bucket` or the folder path. */
  readonly description: string;
  /** Every object whose key starts with `prefix`, in key (byte) order, across all pages. */
  list(prefix: string): AsyncIterable<StoredObject>;
  /** The object's size and version, or undefined when there is no such object. */
  stat(key: string): Promise<StoredObject | undefined>;
  /** Streams the object's bytes. Throws StorageError when it does not exist. */
  read(key: string): Promise<Readable>;
  /**
   * As `read`, and says which version of the object the stream holds (the whole object's, also
   * when reading from `from`). `from`: the stream starts at that byte (S3 ranged GET; a positioned
   * file stream), below the object's size.
   */
  open(key: string, options?: { from?: number }): Promise<OpenedObject>;
  /**
   * Bytes `[start, end)` of the object (S3 ranged GET; a positioned file read), e.g. a Parquet
   * footer and the few column chunks a reader needs. Optional: callers fall back to `read`.
   */
  readRange?(key: string, start: number, end: number): Promise<Uint8Array>;
  /**
   * Writes the whole object. It becomes visible only complete (S3 PUT; local: temp file + rename),
   * and writing the same key again replaces it.
   */
  write(key: string, body: Uint8Array | string, options?: WriteOptions): Promise<void>;
  /**
   * Writes an object from chunks as they come, never holding it whole; returns its size in bytes.
   * It becomes visible only complete, as with `write`: S3 sends a multipart upload (a body smaller
   * than one part goes as a single PUT) and aborts it when anything fails; a local folder writes a
   * temp file and renames it. When `chunks` throws, nothing appears (the temp file is removed, the
   * upload aborted) and that same error is thrown.
   */
  writeStream(key: string, chunks: AsyncIterable<Uint8Array>, options?: WriteOptions): Promise<number>;
  /** Removes the object; no error if it is already gone. Local: empty folders left behind go too. */
  delete(key: string): Promise<void>;
  /**
   * Removes what interrupted writes under `prefix` left behind: local `*.tmp-*` files, S3
   * multipart uploads never completed (billed until aborted). Only those whose key, less the
   * prefix, `owned` accepts (Default: all): deeper keys may be another writer's. Returns how many.
   */
  abortIncompleteWrites(prefix: string, owned?: (relativeKey: string) => boolean): Promise<number>;
}
