import { Readable } from 'node:stream';

import type { __MetadataBearer, PutObjectCommand, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';

import type { S3Settings } from '../config.js';
import { EmbedqError, StorageError, StorageUnavailableError } from '../errors.js';
import { CountedChunks } from './counted-chunks.js';
import { mapStreamErrors } from './map-stream-errors.js';
import type { ObjectStore, OpenedObject, StoredObject, WriteOptions } from './object-store.js';
import { failStalledReads } from './stalled-reads.js';

/**
 * The S3 client a store is given: made already, or being made (`loadS3Client`). This module loads
 * the AWS SDK only at a store's first request (s3-client.ts says why), so a process that opens no
 * s3:// location never loads it.
 */
export type S3ClientSource = S3Client | Promise<S3Client>;

type Sdk = typeof import('./s3-client.js');
let sdk: Promise<Sdk> | undefined;

/** The AWS SDK as a store needs it (s3-client.ts), loaded once: at the first client made or request sent. */
function loadSdk(): Promise<Sdk> {
  sdk ??= import('./s3-client.js');
  return sdk;
}

/** The process's S3 client (see createS3Client), the AWS SDK loaded to make it. */
export async function loadS3Client(settings: S3Settings, overrides: Partial<S3ClientConfig> = {}): Promise<S3Client> {
  return (await loadSdk()).createS3Client(settings, overrides);
}

/** What a request needs: the client, the SDK and the client's timeout. */
interface Connection {
  client: S3Client;
  s3: Sdk;
  timeoutMs: number;
}

/**
 * The slowest a working link sends a request's body: a PUT may take its timeout plus its body's
 * time at this pace (an 8 MiB part: 64 s more) before it is given up.
 */
const SLOWEST_BODY_BYTES_PER_SECOND = 128 * 1024;
const MAX_TIMER_MS = 2_147_483_647;

export interface S3ObjectStoreOptions {
  /** `MaxKeys` of each ListObjectsV2 page (Default: 1,000, the S3 maximum). Small values test paging. */
  listPageSize?: number;
  /** Bodies larger than this go up as a multipart upload (Default: 64 MiB; S3 parts are at least 5 MiB). */
  multipartThresholdBytes?: number;
  /**
   * Part size of streamed writes (`writeStream`), in bytes (Default: 8 MiB; S3's minimum is 5 MiB).
   * A streamed write holds about three parts: two uploading, one filling.
   */
  streamPartBytes?: number;
}

const DEFAULT_MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024;
const DEFAULT_STREAM_PART_BYTES = 8 * 1024 * 1024;
/** Parts of one streamed write uploading at once: enough to keep a connection busy, few to hold. */
const STREAM_PARTS_IN_FLIGHT = 2;

/** An ObjectStore over one S3 bucket; keys are S3 object keys. */
export class S3ObjectStore implements ObjectStore {
  readonly description: string;
  readonly #client: Promise<S3Client>;
  readonly #listPageSize: number | undefined;
  readonly #multipartThresholdBytes: number;
  readonly #streamPartBytes: number;

  constructor(
    client: S3ClientSource,
    readonly bucket: string,
    options: S3ObjectStoreOptions = {},
  ) {
    this.description = `s3://${bucket}`;
    this.#client = Promise.resolve(client);
    // A client that failed to be made fails each request that needs it; a store never asked for
    // anything must not turn that into an unhandled rejection.
    this.#client.catch(() => undefined);
    this.#listPageSize = options.listPageSize;
    this.#multipartThresholdBytes = options.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD_BYTES;
    this.#streamPartBytes = options.streamPartBytes ?? DEFAULT_STREAM_PART_BYTES;
  }

  async #connect(): Promise<Connection> {
    const [client, s3] = await Promise.all([this.#client, loadSdk()]);
    return { client, s3, timeoutMs: s3.timeoutOf(client) };
  }

  /** `s3://bucket/key`, for messages. */
  url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    const { client, s3 } = await this.#connect();
    let continuationToken: string | undefined;
    do {
      const page = await this.#send('list', prefix, () =>
        client.send(
          new s3.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix || undefined,
            ContinuationToken: continuationToken,
            MaxKeys: this.#listPageSize,
            // XML cannot carry every key as it is: its parsers turn a CR into LF, so a key holding
            // one named no object. URL-encoded, every key comes back exact.
            EncodingType: 'url',
          }),
        ),
      );
      // A server that ignores the request (s3rver) does not echo it, and sends keys as they are.
      const keyOf = page.EncodingType === 'url' ? decodeListedKey : (key: string): string => key;
      // S3 returns keys in UTF-8 byte order within and across pages; we keep its order.
      for (const entry of page.Contents ?? []) {
        if (entry.Key !== undefined) yield { key: keyOf(entry.Key), sizeBytes: entry.Size ?? 0, version: s3Version(entry.ETag, entry.Size) };
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    try {
      const { client, s3 } = await this.#connect();
      const head = await client.send(new s3.HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, sizeBytes: head.ContentLength ?? 0, version: s3Version(head.ETag, head.ContentLength) };
    } catch (error) {
      // HEAD responses have no body, so a missing key arrives as a bare 404 (`NotFound`).
      if (httpStatusOf(error) === 404) return undefined;
      throw toStorageError(error, 'stat', this.url(key));
    }
  }

  async read(key: string): Promise<Readable> {
    return (await this.open(key)).body;
  }

  async open(key: string, options: { from?: number } = {}): Promise<OpenedObject> {
    const from = options.from ?? 0;
    const { client, s3, timeoutMs } = await this.#connect();
    const response = await this.#send('read', key, () =>
      client.send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: key, ...(from > 0 ? { Range: `bytes=${from}-` } : {}) })),
    );
    const body = response.Body;
    if (!(body instanceof Readable)) {
      throw new StorageError(`read ${this.url(key)}: the response has no Node.js stream body`);
    }
    // A ranged GET's length is the range's; `Content-Range: bytes a-b/size` has the object's.
    const size = from > 0 ? Number(/\/(\d+)$/.exec(response.ContentRange ?? '')?.[1] ?? Number.NaN) : response.ContentLength;
    // One GET serves one version whole, even if the key is overwritten while it streams.
    const unstalled = failStalledReads(body, timeoutMs);
    return { body: mapStreamErrors(unstalled, (error) => toStorageError(error, 'read', this.url(key))), version: s3Version(response.ETag, size) };
  }

  async readRange(key: string, start: number, end: number): Promise<Uint8Array> {
    if (end <= start) return new Uint8Array(0);
    const { client, s3, timeoutMs } = await this.#connect();
    const response = await this.#send('read', key, () =>
      client.send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end - 1}` })),
    );
    const body = response.Body;
    if (!(body instanceof Readable)) throw new StorageError(`read ${this.url(key)}: the response has no Node.js stream body`);
    // Watched as `open`'s body is: a body that stopped coming held a --reuse split for good.
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of failStalledReads(body, timeoutMs)) chunks.push(chunk);
    } catch (error) {
      throw toStorageError(error, 'read', this.url(key));
    }
    return Buffer.concat(chunks);
  }

  async write(key: string, body: Uint8Array | string, options: WriteOptions = {}): Promise<void> {
    const { signal } = options;
    const sizeBytes = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    try {
      const connection = await this.#connect();
      if (sizeBytes > this.#multipartThresholdBytes) {
        // lib-storage uploads parts in parallel and completes the multipart upload, or aborts it
        // on error (leavePartsOnError: false); the object appears only when it completes. A process
        // killed mid-upload leaves the parts: finalize and --overwrite abort those
        // (abortIncompleteWrites).
        const bytes = typeof body === 'string' ? Buffer.from(body) : body;
        await this.#upload(connection, key, bytes, signal).done();
      } else {
        // An explicit length: the SDK cannot infer one for an empty body and would warn.
        const put = new connection.s3.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: sizeBytes });
        await connection.client.send(put, { abortSignal: signal, requestTimeout: timeoutWithBody(connection.timeoutMs, sizeBytes) });
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw toStorageError(error, 'write', this.url(key));
    }
  }

  async writeStream(key: string, chunks: AsyncIterable<Uint8Array>, options: WriteOptions = {}): Promise<number> {
    const { signal } = options;
    const counted = new CountedChunks(chunks);
    const body = Readable.from(counted, { objectMode: false });
    try {
      // lib-storage sends a body shorter than one part as a single PUT; a longer one as a multipart
      // upload, completed after the last part or aborted when the body or a part fails
      // (leavePartsOnError: false). Either way the object appears only complete.
      await this.#upload(await this.#connect(), key, body, signal, { partSize: this.#streamPartBytes, queueSize: STREAM_PARTS_IN_FLIGHT }).done();
      return counted.bytes;
    } catch (error) {
      body.destroy();
      if (counted.failure) throw counted.failure.error;
      if (signal?.aborted) throw signal.reason;
      throw toStorageError(error, 'write', this.url(key));
    }
  }

  /**
   * A lib-storage upload whose every request `signal` cuts and whose requests with a body get the
   * time to send it. Upload.abort() alone only stops it from starting more requests: a PUT in
   * flight went on, and a cancelled job's shard landed minutes later in the next run's output. The
   * abort of the parts uploaded so far is sent without the signal, or it could not be sent at all.
   */
  #upload(
    { client, s3, timeoutMs }: Connection,
    key: string,
    body: Uint8Array | Readable,
    signal: AbortSignal | undefined,
    sizes: { partSize?: number; queueSize?: number } = {},
  ): InstanceType<typeof s3.Upload> {
    const send = (command: { input: object }, options?: object): Promise<__MetadataBearer> => {
      if (command instanceof s3.AbortMultipartUploadCommand) return client.send(command, options);
      const sent = (command.input as { Body?: unknown }).Body;
      const sizeBytes = sent instanceof Uint8Array ? sent.byteLength : 0;
      return client.send(command as PutObjectCommand, { ...options, abortSignal: signal, requestTimeout: timeoutWithBody(timeoutMs, sizeBytes) });
    };
    // The client as Upload sees it: the same in all but `send`.
    const scoped = Object.assign(Object.create(client) as S3Client, { send });
    const abortController = new AbortController();
    if (signal?.aborted) abortController.abort();
    else signal?.addEventListener('abort', () => abortController.abort(), { once: true });
    return new s3.Upload({ client: scoped, params: { Bucket: this.bucket, Key: key, Body: body }, leavePartsOnError: false, abortController, ...sizes });
  }

  async delete(key: string): Promise<void> {
    // S3 answers 204 for keys that do not exist, so "already gone" needs no special case.
    const { client, s3 } = await this.#connect();
    await this.#send('delete', key, () => client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  async abortIncompleteWrites(prefix: string, owned: (relativeKey: string) => boolean = () => true): Promise<number> {
    const { client, s3 } = await this.#connect();
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await client.send(
          new s3.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix || undefined, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
      } catch (error) {
        // Some S3-compatible servers (s3rver) do not list uploads; there is nothing we can abort then.
        if (httpStatusOf(error) === 501 || (error instanceof Error && error.name === 'NotImplemented')) return aborted;
        throw toStorageError(error, 'list uploads', this.url(prefix));
      }
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !owned(upload.Key.slice(prefix.length))) continue;
        await this.#send('abort upload', upload.Key, () =>
          client.send(new s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId })),
        );
        aborted += 1;
      }
      if (!page.IsTruncated) return aborted;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async #send<T>(operation: string, key: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw toStorageError(error, operation, this.url(key));
    }
  }
}

/** A request's time: the timeout, plus its body's at the slowest pace a working link has. */
function timeoutWithBody(timeoutMs: number, sizeBytes: number): number {
  // No more than a timer holds: a longer one fires at once.
  return Math.min(MAX_TIMER_MS, timeoutMs + Math.ceil((sizeBytes * 1000) / SLOWEST_BODY_BYTES_PER_SECOND));
}

/** Error names the SDK or S3 use for failures that waiting will not fix. */
const PERMANENT_NAMES = new Set([
  'NoSuchKey',
  'NoSuchBucket',
  'NotFound',
  'AccessDenied',
  'Forbidden',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidBucketName',
  'AllAccessDisabled',
  'CredentialsProviderError',
]);

/** Error names that mean "try again later" even though S3 sends them with a 4xx status. */
const TRANSIENT_NAMES = new Set(['SlowDown', 'RequestTimeout', 'RequestTimeTooSkewed', 'Throttling', 'ThrottlingException', 'TimeoutError']);

/**
 * Maps an SDK or network error to the storage error family: missing things and refusals are
 * permanent (StorageError), 5xx, throttling and network trouble are retryable
 * (StorageUnavailableError). The message names the `s3://bucket/key` involved; `cause` keeps the
 * original for logs.
 */
export function toStorageError(error: unknown, operation: string, url: string): EmbedqError {
  if (error instanceof EmbedqError) return error;
  const name = error instanceof Error ? error.name : 'Error';
  const status = httpStatusOf(error);
  const reason = describe(name, status, error);
  const message = `${operation} ${url}: ${reason}`;
  if (TRANSIENT_NAMES.has(name) || status === 429 || (status !== undefined && status >= 500)) {
    return new StorageUnavailableError(message, { cause: error });
  }
  if (PERMANENT_NAMES.has(name) || (status !== undefined && status >= 400)) {
    return new StorageError(message, { cause: error });
  }
  // No HTTP status: the request never got an answer (refused, reset, DNS, aborted body).
  return new StorageUnavailableError(message, { cause: error });
}

function describe(name: string, status: number | undefined, error: unknown): string {
  switch (name) {
    case 'NoSuchKey':
      return 'no such object';
    case 'NoSuchBucket':
      return 'no such bucket';
    case 'AccessDenied':
    case 'Forbidden':
      return 'access denied (check the credentials and the bucket policy)';
  }
  if (status === 404) return 'not found';
  if (status === 403) return 'access denied (check the credentials and the bucket policy)';
  const text = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  const label = typeof code === 'string' && code !== name ? `${name} ${code}` : name;
  // The SDK's own text ("socket hang up", "requestTimeout …") does not say which setting it is.
  const setting = name === 'TimeoutError' && status === undefined ? ' (past S3_TIMEOUT_MS; raise it for a slow store)' : '';
  return `${label}${status ? ` (HTTP ${status})` : ''}: ${text || 'no message'}${setting}`;
}

function httpStatusOf(error: unknown): number | undefined {
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata;
  return typeof metadata?.httpStatusCode === 'number' ? metadata.httpStatusCode : undefined;
}

/** An object's version as `open` and `stat` report it: a GET and a HEAD of one version agree. */
function s3Version(etag: string | undefined, size: number | undefined): string {
  return `${etag ?? ''}:${size ?? ''}`;
}

/** A key from a listing made with `encoding-type=url`: S3 writes a space as `+` (and `+` as `%2B`), as forms do. */
function decodeListedKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}
