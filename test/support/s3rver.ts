import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';

import { createS3Client } from '../../src/storage/s3-store.js';

/** A running in-process s3rver and a client for it. */
export interface TestS3 {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** Path-style, fixed S3RVER credentials, checksums only when required (s3rver rejects the SDK's default CRCs on some calls). */
  client: S3Client;
  /** What a child process (`embedq …`) needs in its environment to reach this server. */
  env: Record<string, string>;
  createBucket(name: string): Promise<void>;
  /** Stops the server, destroys the client, deletes the temp folder. */
  close(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1 (a free port), storing objects in a fresh temp folder, silently. */
export async function startS3rver(): Promise<TestS3> {
  const directory = await mkdtemp(path.join(tmpdir(), 'embedq-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  const { port } = await server.run();
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
    async close() {
      client.destroy();
      // Keep-alive sockets (ours or a child's) would hold httpServer.close() open.
      server.httpServer?.closeAllConnections();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
