import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DashScopeSettings } from '../../src/config.js';
import { createDashScopeClient } from '../../src/dashscope/dashscope-client.js';
import type { EmbeddingClient, EmbeddingParameters } from '../../src/embedding.js';
import { emulatorEmbedding } from '../../src/emulator/emulator-embedding.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.js';
import { embeddingParameters } from '../support/embedding-parameters.js';

/**
 * The client reads response bodies into reused buffers (body-buffers.ts, post-json.ts). These
 * tests check what could go wrong with that: a body that outgrows its first buffer, bodies without
 * Content-Length, and many bodies of different sizes in flight at once sharing the pool; every
 * result must be exactly what the emulator computes for its texts.
 */

const API_KEY = 'sk-body-buffers';
let emulator: RunningEmulator;
let settings: DashScopeSettings;

beforeAll(async () => {
  emulator = await startEmulator({ port: 0, apiKey: API_KEY, seed: 11 });
  settings = { apiKey: API_KEY, baseUrl: emulator.url, timeoutMs: 10_000, targetUtilization: 0.99, reserve: 0, learnedLimitTtlMs: 3_600_000 };
});
afterAll(async () => {
  await emulator.close();
});

const parameters = embeddingParameters;

const textsFor = (seed: number, count: number): string[] => Array.from({ length: count }, (_, index) => `text ${seed}-${index}: ${'lorem ipsum '.repeat(1 + ((seed * 7 + index) % 13))}`);

async function expectExact(client: EmbeddingClient, texts: string[], request: EmbeddingParameters): Promise<void> {
  const result = await client.embed(texts, request);
  expect(result.items).toEqual(texts.map((text) => emulatorEmbedding(text, request)));
}

/** Relays the emulator's answers in small chunked writes, without Content-Length. */
async function chunkingProxy(chunkBytes: number): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(emulator.url);
  const server: Server = createServer((incoming, outgoing) => {
    const upstream = httpRequest({ host: target.hostname, port: target.port, path: incoming.url, method: incoming.method, headers: incoming.headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', () => {
        const body = Buffer.concat(chunks);
        const headers = { ...answer.headers };
        delete headers['content-length'];
        outgoing.writeHead(answer.statusCode ?? 502, { ...headers, 'transfer-encoding': 'chunked' });
        let offset = 0;
        const next = (): void => {
          if (offset >= body.length) {
            outgoing.end();
            return;
          }
          outgoing.write(body.subarray(offset, offset + chunkBytes));
          offset += chunkBytes;
          setImmediate(next);
        };
        next();
      });
    });
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('response bodies in reused buffers', () => {
  it('decodes chunked bodies without Content-Length that outgrow the first buffer (~260 KB in 7 KB chunks)', async () => {
    const proxy = await chunkingProxy(7_000);
    const client = createDashScopeClient({ ...settings, baseUrl: proxy.url });
    try {
      for (let round = 0; round < 3; round += 1) await expectExact(client, textsFor(round, 10), parameters());
      // A small body after the large ones reuses a large buffer; only its own bytes are read.
      await expectExact(client, ['x'], parameters({ dimension: 64, outputType: 'dense' }));
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  it('keeps 40 concurrent bodies of different sizes apart, and stays exact when they are reused', async () => {
    const client = createDashScopeClient(settings);
    try {
      const requests = Array.from({ length: 40 }, (_, index) => ({
        texts: textsFor(index, 1 + (index % 10)),
        request: parameters({ dimension: [64, 256, 1024, 2048][index % 4]!, outputType: index % 3 === 0 ? 'dense' : 'dense&sparse' }),
      }));
      for (let round = 0; round < 2; round += 1) {
        await Promise.all(requests.map(({ texts, request }) => expectExact(client, texts, request)));
      }
    } finally {
      await client.close();
    }
  });

  it('an error body read into a reused buffer is reported from its own bytes', async () => {
    const client = createDashScopeClient(settings);
    const wrongKey = createDashScopeClient({ ...settings, apiKey: 'sk-wrong' });
    try {
      await expectExact(client, textsFor(99, 10), parameters());
      await expect(wrongKey.embed(['x'], parameters())).rejects.toMatchObject({ failure: { providerCode: 'InvalidApiKey' } });
      await expectExact(client, textsFor(98, 3), parameters());
    } finally {
      await client.close();
      await wrongKey.close();
    }
  });
});
