import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { loadSettings } from '../../src/config.js';
import { createS3Client } from '../../src/storage/s3-client.js';

/** Which region S3 requests go to, as the SDK resolves it for a client made from the environment. */
async function regionFor(env: NodeJS.ProcessEnv): Promise<string> {
  return createS3Client(loadSettings(env, { requireApiKey: false }).s3).config.region();
}

describe('the S3 region', () => {
  let folder: string;
  const saved = { ...process.env };
  beforeEach(async () => {
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-aws-'));
    // The SDK's chain reads the process's environment: only what each case sets.
    for (const name of ['AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_PROFILE', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE']) delete process.env[name];
    process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(folder, 'credentials');
  });
  afterEach(async () => {
    process.env = { ...saved };
    await rm(folder, { recursive: true, force: true });
  });

  it("is a profile's region when AWS_REGION is unset (it was always us-east-1)", async () => {
    process.env.AWS_CONFIG_FILE = path.join(folder, 'config');
    await writeFile(process.env.AWS_CONFIG_FILE, '[default]\nregion = eu-west-1\n\n[profile cn]\nregion = cn-north-1\n');
    expect(await regionFor({})).toBe('eu-west-1');
    process.env.AWS_PROFILE = 'cn';
    expect(await regionFor({})).toBe('cn-north-1');
  });

  it('is AWS_REGION when set, over a profile', async () => {
    process.env.AWS_CONFIG_FILE = path.join(folder, 'config');
    await writeFile(process.env.AWS_CONFIG_FILE, '[default]\nregion = eu-west-1\n');
    expect(await regionFor({ AWS_REGION: 'ap-southeast-1' })).toBe('ap-southeast-1');
  });

  it('is us-east-1 when nothing names one (S3-compatible servers take any)', async () => {
    process.env.AWS_CONFIG_FILE = path.join(folder, 'no-such-config');
    expect(await regionFor({})).toBe('us-east-1');
  });
});
