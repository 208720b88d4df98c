/**
 * The S3 client, in a module of its own because it loads the AWS SDK: ~0.15 s of CPU at a process's
 * start, which commands that never touch S3 (`status`, `list`, `cancel`, a local-only run) no
 * longer pay. Everything else reaches it through s3-store.ts's `loadS3Client`, at first use.
 */

import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

import type { S3Settings } from '../config.js';

// What S3ObjectStore sends, for it to reach through this module: an import() of a CommonJS
// library itself keeps only its default export in the bundle (scripts/build.mjs).
export {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
export { Upload } from '@aws-sdk/lib-storage';

/** How long a storage request may wait to connect, for an answer, or for an object's next bytes. */
export const DEFAULT_S3_TIMEOUT_MS = 30_000;
/** Each client's timeout, for the stores that use it (locations.ts hands them the process's one client). */
const timeouts = new WeakMap<S3Client, number>();

/** The timeout `client` was made with (createS3Client's), else the default. */
export function timeoutOf(client: S3Client): number {
  return timeouts.get(client) ?? DEFAULT_S3_TIMEOUT_MS;
}

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
