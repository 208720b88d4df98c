import crypto from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';

import { createS3Client } from '../../src/storage/s3-client.js';

/** A running in-process s3rver and a client for it. */
export interface TestS3 {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** Path-style, fixed S3RVER credentials, checksums only when required (s3rver rejects the SDK's default CRCs on some calls). */
  client: S3Client;
  /** What a child process (`embedq …`) needs in its environment to reach this server. */
  env: Record<string, string>;
  createBucket(name: string): Promise<void>;
  /**
   * An outage: the server stops answering (open connections are cut, new ones refused) for
   * `ms`, then starts again on the same port with the same objects, as a restarted MinIO would.
   */
  outage(ms: number): Promise<void>;
  /** Stops the server, destroys the client, deletes the temp folder. */
  close(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1 (a free port), storing objects in a fresh temp folder, silently. */
export async function startS3rver(): Promise<TestS3> {
  allowSingleDes();
  awaitFileWrites();
  const directory = await mkdtemp(path.join(tmpdir(), 'embedq-s3rver-'));
  let server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  const { port } = await server.run();
  const stop = async (): Promise<void> => {
    // Keep-alive sockets (ours or a child's) would hold httpServer.close() open.
    server.httpServer?.closeAllConnections();
    await server.close();
  };
  const endpoint = `http://127.0.0.1:${port}`;
  const client = createS3Client(
    { region: 'us-east-1', endpoint, forcePathStyle: true, checksums: 'WHEN_REQUIRED' },
    { credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } },
  );
  return {
    endpoint,
    client,
    env: {
      AWS_ENDPOINT_URL_S3: endpoint,
      S3_FORCE_PATH_STYLE: 'true',
      S3_CHECKSUMS: 'WHEN_REQUIRED',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    },
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async outage(ms) {
      await stop();
      await new Promise((resolve) => setTimeout(resolve, ms));
      server = new S3rver({ address: '127.0.0.1', port, silent: true, directory });
      await server.run();
    },
    async close() {
      client.destroy();
      await stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * s3rver 3.7 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node
 * 17+) only has in its legacy provider: without this, every listing with more than one page fails
 * with HTTP 500 (`ERR_OSSL_EVP_UNSUPPORTED`). Three-key 3DES with K1 = K2 = K3 is exactly single
 * DES and lives in the default provider, so `des` calls are routed there. Test process only.
 */
function allowSingleDes(): void {
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
    return; // DES works here (legacy provider loaded); nothing to do.
  } catch {
    // fall through: patch
  }
  const tripled = (key: crypto.CipherKey): Buffer => {
    const bytes = Buffer.from(key as Uint8Array);
    return Buffer.concat([bytes, bytes, bytes]);
  };
  // Loose signatures: the originals are overloaded; extra arguments (options) pass through untouched.
  type Factory = (algorithm: string, key: crypto.CipherKey, iv: crypto.BinaryLike | null, ...rest: unknown[]) => unknown;
  const createCipheriv = crypto.createCipheriv.bind(crypto) as Factory;
  const createDecipheriv = crypto.createDecipheriv.bind(crypto) as Factory;
  const viaTripleDes =
    (original: Factory): Factory =>
    (algorithm, key, iv, ...rest) =>
      algorithm === 'des' ? original('des-ede3-cbc', tripled(key), iv, ...rest) : original(algorithm, key, iv, ...rest);
  Object.assign(crypto, { createCipheriv: viaTripleDes(createCipheriv), createDecipheriv: viaTripleDes(createDecipheriv) });
}

/** The part of s3rver's FilesystemStore that {@link awaitFileWrites} replaces. */
interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: unknown, md5: string): Promise<void>;
  putObject(object: { bucket: string; key: string; metadata: unknown; content: Buffer | NodeJS.ReadableStream }): Promise<{ size: number; md5: string }>;
  putPart(bucket: string, uploadId: string, partNumber: number, content: NodeJS.ReadableStream): Promise<{ size: number; md5: string }>;
}

/**
 * s3rver 3.7 answers a PUT of an object or a part once its hashing stream has finished, not its
 * file write: a LIST or GET right after could see a short file (in a CI run, an object written
 * just before was listed with 0 bytes), and completing a multipart upload could join a part not
 * yet on disk. S3 and MinIO read what was written once the PUT has answered, so the test double
 * is made to: both writes are replaced by ones that finish writing the file first. Test process only.
 */
function awaitFileWrites(): void {
  const store = (createRequire(import.meta.url)('s3rver/lib/stores/filesystem.js') as { prototype: FilesystemStore }).prototype;
  const write = async (file: string, content: Buffer | NodeJS.ReadableStream): Promise<{ size: number; md5: string }> => {
    await mkdir(path.dirname(file), { recursive: true });
    const md5 = crypto.createHash('md5');
    let size = 0;
    const counting = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        md5.update(chunk);
        size += chunk.length;
        callback(null, chunk);
      },
    });
    await pipeline(Buffer.isBuffer(content) ? Readable.from([content]) : content, counting, createWriteStream(file));
    return { size, md5: md5.digest('hex') };
  };
  store.putObject = async function (this: FilesystemStore, object) {
    const written = await write(this.getResourcePath(object.bucket, object.key, 'object'), object.content);
    await this.putMetadata(object.bucket, object.key, object.metadata, written.md5);
    return written;
  };
  store.putPart = async function (this: FilesystemStore, bucket, uploadId, partNumber, content) {
    const partPath = path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId, String(partNumber));
    const written = await write(partPath, content);
    await writeFile(`${partPath}.md5`, written.md5);
    return written;
  };
}
