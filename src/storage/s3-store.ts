import { Readable } from 'node:stream';

import {
  type __MetadataBearer,
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

import type { S3Settings } from '../config.js';
import { EmbedqError, StorageError, StorageUnavailableError } from '../errors.js';
import { CountedChunks } from './counted-chunks.js';
import { mapStreamErrors } from './map-stream-errors.js';
import type { ObjectStore, OpenedObject, StoredObject, WriteOptions } from './object-store.js';
import { failStalledReads } from './stalled-reads.js';

/** How long a storage request may wait to connect, for an answer, or for an object's next bytes. */
export const DEFAULT_S3_TIMEOUT_MS = 30_000;
/**
 * The slowest a working link sends a request's body: a PUT may take its timeout plus its body's
 * time at this pace (an 8 MiB part: 64 s more) before it is given up.
 */
const SLOWEST_BODY_BYTES_PER_SECOND = 128 * 1024;
const MAX_TIMER_MS = 2_147_483_647;
/** Each client's timeout, for the stores that use it (locations.ts hands them the process's one client). */
const timeouts = new WeakMap<S3Client, number>();

/**
 * Creates the one S3 client a process shares. Credentials are the static keys from the settings
 * when set, else the SDK's own chain (profiles, instance roles); `overrides` is for
 * tests and special setups (for example fixed credentials for a local server). Does no I/O.
 */
export function createS3Client(settings: S3Settings, overrides: Partial<S3ClientConfig> = {}): S3Client {
  const timeoutMs = settings.timeoutMs ?? DEFAULT_S3_TIMEOUT_MS;
  const client = new S3Client({
    region: settings.region ?? sdkRegionOrDefault(),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    forcePathStyle: settings.forcePathStyle,
    // S3-compatible servers (s3rver, older MinIO) reject the SDK's default CRC checksums.
    requestChecksumCalculation: settings.checksums,
    responseChecksumValidation: settings.checksums,
    // A copy: settings are frozen, and the SDK marks the credentials object it is given.
    ...(settings.credentials ? { credentials: { ...settings.credentials } } : {}),
    // Without these a request that got no answer waited for good: a hung PUT held a shard writer
    // (and every write queued behind it on that worker) for over ten minutes without a word. The
    // request timeout runs until the answer's headers; a body being read is watched by the store
    // (failStalledReads), not by a socket timeout, which would also cut a read the reader paused.
    requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs, throwOnRequestTimeout: true },
    ...overrides,
  });
  timeouts.set(client, timeoutMs);
  return client;
}

/** Where S3 requests go when nothing names a region: S3-compatible servers take any. */
const FALLBACK_REGION = 'us-east-1';

/**
 * The region the SDK's own chain finds (a profile's `region` in ~/.aws/config, `AWS_PROFILE`),
 * else us-east-1. Before, us-east-1 was always given when `AWS_REGION` was unset, over a
 * profile's region, and a bucket elsewhere answered every request with a redirect error.
 */
function sdkRegionOrDefault(): () => Promise<string> {
  // A client given no region resolves one from that chain, lazily, and does no I/O until asked.
  const fromSdk = new S3Client({}).config.region;
  return async () => {
    try {
      return await fromSdk();
    } catch {
      return FALLBACK_REGION;
    }
  };
}

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
  readonly #listPageSize: number | undefined;
  readonly #multipartThresholdBytes: number;
  readonly #streamPartBytes: number;
  readonly #timeoutMs: number;

  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    options: S3ObjectStoreOptions = {},
  ) {
    this.description = `s3://${bucket}`;
    this.#listPageSize = options.listPageSize;
    this.#multipartThresholdBytes = options.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD_BYTES;
    this.#streamPartBytes = options.streamPartBytes ?? DEFAULT_STREAM_PART_BYTES;
    this.#timeoutMs = timeouts.get(client) ?? DEFAULT_S3_TIMEOUT_MS;
  }

  /** `s3://bucket/key`, for messages. */
  url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    let continuationToken: string | undefined;
    do {
      const page = await this.#send('list', prefix, () =>
        this.client.send(
          new ListObjectsV2Command({
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
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
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
    const response = await this.#send('read', key, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(from > 0 ? { Range: `bytes=${from}-` } : {}) })),
    );
    const body = response.Body;
    if (!(body instanceof Readable)) {
      throw new StorageError(`read ${this.url(key)}: the response has no Node.js stream body`);
    }
    // A ranged GET's length is the range's; `Content-Range: bytes a-b/size` has the object's.
    const size = from > 0 ? Number(/\/(\d+)$/.exec(response.ContentRange ?? '')?.[1] ?? Number.NaN) : response.ContentLength;
    // One GET serves one version whole, even if the key is overwritten while it streams.
    const unstalled = failStalledReads(body, this.#timeoutMs);
    return { body: mapStreamErrors(unstalled, (error) => toStorageError(error, 'read', this.url(key))), version: s3Version(response.ETag, size) };
  }

  async readRange(key: string, start: number, end: number): Promise<Uint8Array> {
    if (end <= start) return new Uint8Array(0);
    const response = await this.#send('read', key, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end - 1}` })),
    );
    const body = response.Body;
    if (!(body instanceof Readable)) throw new StorageError(`read ${this.url(key)}: the response has no Node.js stream body`);
    // Watched as `open`'s body is: a body that stopped coming held a --reuse split for good.
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of failStalledReads(body, this.#timeoutMs)) chunks.push(chunk);
    } catch (error) {
      throw toStorageError(error, 'read', this.url(key));
    }
    return Buffer.concat(chunks);
  }

  async write(key: string, body: Uint8Array | string, options: WriteOptions = {}): Promise<void> {
    const { signal } = options;
    const sizeBytes = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    try {
      if (sizeBytes > this.#multipartThresholdBytes) {
        // lib-storage uploads parts in parallel and completes the multipart upload, or aborts it
        // on error (leavePartsOnError: false); the object appears only when it completes. A process
        // killed mid-upload leaves the parts: finalize and --overwrite abort those
        // (abortIncompleteWrites).
        const bytes = typeof body === 'string' ? Buffer.from(body) : body;
        await this.#upload(key, bytes, signal).done();
      } else {
        // An explicit length: the SDK cannot infer one for an empty body and would warn.
        const put = new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: sizeBytes });
        await this.client.send(put, { abortSignal: signal, requestTimeout: this.#timeoutWithBody(sizeBytes) });
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
      await this.#upload(key, body, signal, { partSize: this.#streamPartBytes, queueSize: STREAM_PARTS_IN_FLIGHT }).done();
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
  #upload(key: string, body: Uint8Array | Readable, signal: AbortSignal | undefined, sizes: { partSize?: number; queueSize?: number } = {}): Upload {
    const client = this.client;
    const send = (command: { input: object }, options?: object): Promise<__MetadataBearer> => {
      if (command instanceof AbortMultipartUploadCommand) return client.send(command, options);
      const sent = (command.input as { Body?: unknown }).Body;
      const sizeBytes = sent instanceof Uint8Array ? sent.byteLength : 0;
      return client.send(command as PutObjectCommand, { ...options, abortSignal: signal, requestTimeout: this.#timeoutWithBody(sizeBytes) });
    };
    // The client as Upload sees it: the same in all but `send`.
    const scoped = Object.assign(Object.create(client) as S3Client, { send });
    const abortController = new AbortController();
    if (signal?.aborted) abortController.abort();
    else signal?.addEventListener('abort', () => abortController.abort(), { once: true });
    return new Upload({ client: scoped, params: { Bucket: this.bucket, Key: key, Body: body }, leavePartsOnError: false, abortController, ...sizes });
  }

  /** A request's time: the timeout, plus its body's at the slowest pace a working link has. */
  #timeoutWithBody(sizeBytes: number): number {
    // No more than a timer holds: a longer one fires at once.
    return Math.min(MAX_TIMER_MS, this.#timeoutMs + Math.ceil((sizeBytes * 1000) / SLOWEST_BODY_BYTES_PER_SECOND));
  }

  async delete(key: string): Promise<void> {
    // S3 answers 204 for keys that do not exist, so "already gone" needs no special case.
    await this.#send('delete', key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  async abortIncompleteWrites(prefix: string, owned: (relativeKey: string) => boolean = () => true): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix || undefined, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
      } catch (error) {
        // Some S3-compatible servers (s3rver) do not list uploads; there is nothing we can abort then.
        if (httpStatusOf(error) === 501 || (error instanceof Error && error.name === 'NotImplemented')) return aborted;
        throw toStorageError(error, 'list uploads', this.url(prefix));
      }
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !owned(upload.Key.slice(prefix.length))) continue;
        await this.#send('abort upload', upload.Key, () =>
          this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId })),
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
