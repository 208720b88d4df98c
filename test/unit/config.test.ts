import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { EMULATOR_API_KEY, loadSettings } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { NO_OUTPUT, parseJobOptions } from '../../src/job-options.js';
import { createLogger } from '../../src/logger.js';
import { describeRedisTarget } from '../../src/redis/redis-client.js';

const problems = (run: () => unknown): string => {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
};

describe('settings from the environment', () => {
  it('defaults to Singapore and needs an API key for the real service', () => {
    expect(problems(() => loadSettings({}))).toMatch(/DASHSCOPE_API_KEY: missing; it is required for https:\/\/dashscope-intl\.aliyuncs\.com/);
    const settings = loadSettings({ DASHSCOPE_API_KEY: 'sk-real' });
    expect(settings.dashscope.baseUrl).toBe('https://dashscope-intl.aliyuncs.com');
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', DASHSCOPE_REGION: 'beijing' }).dashscope.baseUrl).toBe('https://dashscope.aliyuncs.com');
    expect(Object.isFrozen(settings.dashscope)).toBe(true);
  });

  it('needs no key for the emulator on loopback', () => {
    const settings = loadSettings({ DASHSCOPE_BASE_URL: 'http://127.0.0.1:8089/' });
    expect(settings.dashscope).toMatchObject({ baseUrl: 'http://127.0.0.1:8089', apiKey: EMULATOR_API_KEY });
  });

  it('refuses a non-loopback http:// base URL, which would send the key in cleartext, unless allowed (issue 9, item 12)', () => {
    const env = { DASHSCOPE_API_KEY: 'sk-real', DASHSCOPE_BASE_URL: 'http://dashscope.example.internal' };
    expect(problems(() => loadSettings(env))).toMatch(/DASHSCOPE_BASE_URL: http:\/\/ sends the API key in cleartext.*EMBEDQ_ALLOW_INSECURE_HTTP=1/);
    expect(loadSettings({ ...env, EMBEDQ_ALLOW_INSECURE_HTTP: '1' }).dashscope.baseUrl).toBe('http://dashscope.example.internal');
    expect(loadSettings({ DASHSCOPE_API_KEY: 'sk-real', DASHSCOPE_BASE_URL: 'https://dashscope.example.internal' }).dashscope.baseUrl).toBe('https://dashscope.example.internal');
    expect(loadSettings({ DASHSCOPE_API_KEY: 'sk-real', DASHSCOPE_BASE_URL: 'http://localhost:8089' }).dashscope.baseUrl).toBe('http://localhost:8089');
  });

  it('lists every bad value at once', () => {
    const message = problems(() =>
      loadSettings({ DASHSCOPE_API_KEY: 'k', DASHSCOPE_REGION: 'mars', REDIS_URL: 'http://x', EMBEDQ_CONCURRENCY: '0', S3_FORCE_PATH_STYLE: 'maybe' }),
    );
    for (const field of ['DASHSCOPE_REGION', 'REDIS_URL', 'EMBEDQ_CONCURRENCY', 'S3_FORCE_PATH_STYLE']) expect(message).toContain(`- ${field}:`);
    expect(problems(() => loadSettings({ DASHSCOPE_REGION: 'beijing', DASHSCOPE_BASE_URL: 'http://127.0.0.1:1' }))).toMatch(/not both/);
  });

  it('takes a Redis Cluster from REDIS_CLUSTER_NODES, with a hash-tag prefix', () => {
    const env = { DASHSCOPE_API_KEY: 'k', REDIS_CLUSTER_NODES: '10.0.0.1:7000, rediss://:pw@10.0.0.2:7001,', EMBEDQ_REDIS_PREFIX: '{embedq}' };
    const settings = loadSettings(env);
    expect(settings.redisClusterNodes).toEqual(['10.0.0.1:7000', 'rediss://:pw@10.0.0.2:7001']);
    expect(settings.redisPrefix).toBe('{embedq}');
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k' }).redisClusterNodes).toBeUndefined();
    // Without the hash tag, a job's keys and its queues would scatter over slots (CROSSSLOT).
    expect(problems(() => loadSettings({ ...env, EMBEDQ_REDIS_PREFIX: 'embedq' }))).toMatch(/EMBEDQ_REDIS_PREFIX: a Redis Cluster needs a hash-tag prefix such as \{embedq\}/);
    // A broken tag is suggested whole, not wrapped again (it said {{xc1} and {{}}).
    expect(problems(() => loadSettings({ ...env, EMBEDQ_REDIS_PREFIX: '{xc1' }))).toContain('such as {xc1},');
    expect(problems(() => loadSettings({ ...env, EMBEDQ_REDIS_PREFIX: '{}' }))).toContain('such as {embedq},');
    expect(problems(() => loadSettings({ ...env, REDIS_URL: 'redis://x:6379' }))).toMatch(/REDIS_CLUSTER_NODES: set REDIS_URL .* not both/);
    expect(problems(() => loadSettings({ ...env, REDIS_CLUSTER_NODES: 'nohost, http://h:1' }))).toMatch(/nohost: needs a host and a port[\s\S]*http:\/\/h:1: must be host:port, redis:\/\/ or rediss:\/\//);
    // Braces only as a leading hash tag; one Redis may use one too.
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_REDIS_PREFIX: '{tenant-a}prod' }).redisPrefix).toBe('{tenant-a}prod');
    for (const prefix of ['a{b}', '{}', '{a}{b}', 'a:b']) expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_REDIS_PREFIX: prefix })), prefix).toMatch(/EMBEDQ_REDIS_PREFIX: letters/);
  });

  it('reads the rate gate\'s reserve and learned-limit TTL, and refuses a reserve of the whole quota', () => {
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k' }).dashscope).toMatchObject({ reserve: 0, learnedLimitTtlMs: 3_600_000 });
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_RESERVE: '0.25', EMBEDQ_LEARNED_LIMIT_TTL_S: '600' }).dashscope).toMatchObject({
      reserve: 0.25,
      learnedLimitTtlMs: 600_000,
    });
    const message = problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_RESERVE: '1', EMBEDQ_LEARNED_LIMIT_TTL_S: '0' }));
    expect(message).toContain('- EMBEDQ_RESERVE:');
    expect(message).toContain('- EMBEDQ_LEARNED_LIMIT_TTL_S:');
  });

  it('keeps records of ended jobs 30 days unless told otherwise (0: for good)', () => {
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k' }).jobRetentionMs).toBe(30 * 86_400_000);
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_JOB_RETENTION_DAYS: '0.5' }).jobRetentionMs).toBe(43_200_000);
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_JOB_RETENTION_DAYS: '0' }).jobRetentionMs).toBe(0);
    expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_JOB_RETENTION_DAYS: '-1' }))).toContain('- EMBEDQ_JOB_RETENTION_DAYS:');
  });

  it('refuses an empty number (it read as 0: an empty retention kept job records for good) and a wait no timer can hold', () => {
    for (const variable of ['EMBEDQ_JOB_RETENTION_DAYS', 'EMBEDQ_QPM', 'EMBEDQ_RESERVE', 'DASHSCOPE_TIMEOUT_MS', 'S3_TIMEOUT_MS', 'EMBEDQ_CONCURRENCY']) {
      expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', [variable]: '' }))).toContain(`- ${variable}: is empty: give a number, or unset it for the default`);
      expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', [variable]: '  ' }))).toContain(`- ${variable}: is empty`);
    }
    // Node fires a longer timer after 1 ms: every request "timed out" at once, the stalled check ran in a loop.
    for (const variable of ['DASHSCOPE_TIMEOUT_MS', 'S3_TIMEOUT_MS', 'EMBEDQ_STALLED_INTERVAL_MS', 'EMBEDQ_LOCK_DURATION_MS']) {
      expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', [variable]: '3000000000' }))).toContain(`- ${variable}: at most 2147483647`);
    }
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', DASHSCOPE_TIMEOUT_MS: '2147483647' }).dashscope.timeoutMs).toBe(2_147_483_647);
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', EMBEDQ_QPM: ' 1200 ' }).dashscope.requestsPerMinute).toBe(1200);
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k' }).s3.timeoutMs).toBe(30_000);
  });

  it('reads static S3 credentials when given', () => {
    const settings = loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK' });
    expect(settings.s3.credentials).toEqual({ accessKeyId: 'AK', secretAccessKey: 'SK', sessionToken: undefined });
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k' }).s3.credentials).toBeUndefined();
  });

  it('refuses a blank or spaced AWS_REGION and an endpoint that is not http(s) (they failed later as INTERNAL or retried storage errors)', () => {
    expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_REGION: '' }))).toMatch(/AWS_REGION: must be a region name such as us-east-1/);
    expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_REGION: ' ' }))).toMatch(/AWS_REGION: must be a region name/);
    expect(problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_ENDPOINT_URL_S3: 'ftp://127.0.0.1:9000' }))).toMatch(/AWS_ENDPOINT_URL_S3: must be an http\(s\) URL/);
    for (const region of ['us-east-1', 'auto', 'garage', 'cn-hangzhou']) expect(loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_REGION: region }).s3.region).toBe(region);
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9000' }).s3.endpoint).toBe('http://127.0.0.1:9000');
  });
});

describe('job options', () => {
  it('applies the contract defaults', () => {
    expect(parseJobOptions({ input: 'in/', output: 'out/' })).toMatchObject({
      model: 'text-embedding-v4',
      dimension: 1024,
      outputType: 'dense&sparse',
      textType: 'document',
      api: 'dashscope',
      shardRows: 10_000,
      outputFormat: 'parquet',
      textField: 'text',
      longLines: 'truncate',
    });
  });

  it('validates per model and per API, reporting every problem', () => {
    const message = problems(() => parseJobOptions({ input: 'i', output: 'o', model: 'text-embedding-v3', dimension: 2048, instruct: 'x' }));
    expect(message).toMatch(/dimension: 2048 is not allowed for text-embedding-v3; choose one of 1024, 768, 512/);
    expect(message).toMatch(/instruct: text-embedding-v3 does not take an instruction/);
    expect(problems(() => parseJobOptions({ input: 'i', output: 'o', model: 'text-embedding-v9' }))).toMatch(/model: must be one of/);
    // The default follows the API: dense is all the compatible endpoint returns (it was refused).
    expect(parseJobOptions({ input: 'i', output: 'o', api: 'openai' }).outputType).toBe('dense');
    expect(parseJobOptions({ input: 'i', output: 'o' }).outputType).toBe('dense&sparse');
    expect(problems(() => parseJobOptions({ input: 'i', output: 'o', api: 'openai', outputType: 'dense&sparse' }))).toMatch(/outputType: "dense&sparse" needs the native API/);
    expect(parseJobOptions({ input: 'i', output: 'o', api: 'openai', outputType: 'dense', dimension: '64' }).dimension).toBe(64);
    // Counts are digits (a flag) or JSON numbers (a stored job): coerced, these passed as other numbers.
    for (const typed of ['0x10', '1e3', '1024.0', ' 512', '']) {
      expect(problems(() => parseJobOptions({ input: 'i', output: 'o', shardRows: typed }))).toContain(`- shardRows: must be a whole number written in digits, not ${JSON.stringify(typed)}`);
    }
    expect(problems(() => parseJobOptions({ input: 'i', output: 'o', dimension: 1024.5 }))).toContain('- dimension: must be a whole number');
    expect(parseJobOptions({ input: 'i', output: 'o', shardRows: 2_000, dimension: '512' })).toMatchObject({ shardRows: 2_000, dimension: 512 });
    const locations = problems(() => parseJobOptions({ input: 's3://', output: 'ftp://host/out/' }));
    expect(locations).toMatch(/- input: invalid location "s3:\/\/"/);
    expect(locations).toMatch(/- output: unsupported location "ftp:\/\/host\/out\/"/);
  });

  it('refuses an output where listing the input would find its files, and allows every other', () => {
    const inside = (input: string, output: string): boolean => {
      try {
        parseJobOptions({ input, output });
        return false;
      } catch (error) {
        return /is inside the input/.test((error as Error).message);
      }
    };
    // A prefix lists everything under it: the next run would read this run's shards as lines.
    expect(inside('s3://b/docs/', 's3://b/docs/vectors/')).toBe(true);
    expect(inside('s3://b/docs/', 's3://b/docs/')).toBe(true);
    expect(inside('s3://b/docs/', 's3://b/docs')).toBe(true);
    expect(inside('s3://b/', 's3://b/out/')).toBe(true);
    expect(inside('s3://b/docs/', 's3://b/docs-vectors/')).toBe(false);
    expect(inside('s3://b/docs/', 's3://other/docs/vectors/')).toBe(false);
    expect(inside('s3://b/docs/', 's3://b/')).toBe(false); // the input is deeper: overwrite never touches it
    // One object lists nothing.
    expect(inside('s3://b/docs/a.txt', 's3://b/docs/a.txt/')).toBe(false);
    expect(inside('s3://b/docs', 's3://b/docs/vectors/')).toBe(false);
    // Local folders, made absolute; hidden folders are not read.
    expect(inside('/data/corpus', '/data/corpus/vectors')).toBe(true);
    expect(inside('/data/corpus/', '/data/corpus')).toBe(true);
    expect(inside('corpus', `${process.cwd()}/corpus/out`)).toBe(true);
    expect(inside('/data/corpus', '/data/corpus/.vectors')).toBe(false);
    expect(inside('/data/corpus', '/data/corpus-vectors')).toBe(false);
    expect(inside('/data/corpus', '/data')).toBe(false);
    expect(problems(() => parseJobOptions({ input: '/data/corpus', output: '/data/corpus/v' }))).toContain(
      "- output: /data/corpus/v is inside the input /data/corpus: the next run would read this run's files as corpus lines; choose an output outside it (or a hidden folder in it, such as .vectors/, which reading skips)",
    );
    // `embedq plan` writes nothing.
    expect(inside(process.cwd(), NO_OUTPUT)).toBe(false);
  });

  it('refuses --id-field with --format text: plain-text lines have no id, and the delta would list nothing', () => {
    expect(problems(() => parseJobOptions({ input: 's3://b/in/', output: 's3://b/out/', format: 'text', idField: 'id' }))).toContain(
      '- idField: plain-text lines (--format text) have no fields, so no id; --id-field needs JSON Lines input',
    );
    expect(parseJobOptions({ input: 's3://b/in/', output: 's3://b/out/', idField: 'id' }).idField).toBe('id');
    // A --text-field other than the default, likewise: the whole line was embedded.
    expect(problems(() => parseJobOptions({ input: 's3://b/in/', output: 's3://b/out/', format: 'text', textField: 'content' }))).toContain(
      '- textField: plain-text lines (--format text) have no fields: "content" would never be read; --text-field needs JSON Lines input',
    );
    expect(parseJobOptions({ input: 's3://b/in/', output: 's3://b/out/', format: 'text' }).textField).toBe('text');
  });

  it("refuses an output in a folder named _tmp or _delta: a run into the folder above removed its files", () => {
    const reason = "is in a folder named _tmp or _delta, the names an output keeps for its own files: a run into the folder above would remove this one's; choose another name";
    for (const output of ['s3://b/out/_delta/', 's3://b/out/_delta/x/', 's3://b/_tmp', '/data/out/_delta', '/data/_tmp/out/']) {
      expect(problems(() => parseJobOptions({ input: 's3://b/in/', output })), output).toContain(`- output: ${output} ${reason}`);
    }
    for (const output of ['s3://b/out/delta/', 's3://b/out/_deltas/', '/data/tmp/out', '/data/out_tmp']) expect(parseJobOptions({ input: 's3://b/in/', output }).output).toBe(output);
  });

  it('refuses a link into an output\'s _delta folder too', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'embedq-reserved-'));
    try {
      await mkdir(path.join(folder, 'out', '_delta'), { recursive: true });
      await symlink(path.join(folder, 'out', '_delta'), path.join(folder, 'dl'));
      expect(problems(() => parseJobOptions({ input: 's3://b/in/', output: path.join(folder, 'dl') }))).toContain('is in a folder named _tmp or _delta');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});

describe('logger', () => {
  it('never writes the API key or an Authorization header', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = createLogger({ level: 'info' }, sink);
    const settings = loadSettings({ DASHSCOPE_API_KEY: 'sk-very-secret', AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'aws-secret', REDIS_URL: 'redis://:redis-secret@h:6379' });
    const cluster = loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_CLUSTER_NODES: 'redis://:cluster-secret@h:7000', EMBEDQ_REDIS_PREFIX: '{e}' });
    logger.info({ settings }, 'settings');
    logger.info({ request: { headers: { authorization: 'Bearer sk-very-secret' } } }, 'request');
    logger.child({ dashscope: settings.dashscope }).info('child');
    logger.info({ settings: cluster }, 'cluster settings');
    logger.info({ env: { REDIS_URL: 'redis://h:6379/?password=env-secret' } }, 'child environment');
    const output = lines.join('');
    expect(lines).toHaveLength(5);
    expect(output).not.toContain('sk-very-secret');
    expect(output).not.toContain('aws-secret');
    expect(output).not.toContain('redis-secret');
    expect(output).not.toContain('cluster-secret');
    expect(output).not.toContain('env-secret');
    expect(output).toContain('[redacted]');
  });

  it('masks a Redis password in the URL\'s user part and in its query string, which ioredis reads too', () => {
    expect(describeRedisTarget({ url: 'redis://:Secret-1@127.0.0.1:6394/0' })).toBe('REDIS_URL=redis://:***@127.0.0.1:6394/0');
    expect(describeRedisTarget({ url: 'redis://127.0.0.1:6394/?password=Secret-2' })).toBe('REDIS_URL=redis://127.0.0.1:6394/?password=***');
    expect(describeRedisTarget({ url: 'redis://:Secret-1@127.0.0.1:6394/0?db=1&password=Secret-2&sentinelPassword=Secret-3' })).toBe(
      'REDIS_URL=redis://:***@127.0.0.1:6394/0?db=1&password=***&sentinelPassword=***',
    );
    expect(describeRedisTarget({ clusterNodes: ['redis://:Secret-1@h:7000?password=Secret-2', 'h:7001'] })).not.toMatch(/Secret/);
  });

  it('names a Redis URL or base URL in a configuration error without its password: refused credentials, a node, a URL ioredis cannot read', () => {
    // Printed in clear before: a cluster node's password, and a base URL's user and password.
    const node = problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_CLUSTER_NODES: 'redis://:Node-Secret@127.0.0.1, http://u:Http-Secret@x:1', EMBEDQ_REDIS_PREFIX: '{e}' }));
    expect(node).toContain('REDIS_CLUSTER_NODES: redis://:***@127.0.0.1: needs a host and a port');
    expect(node).toContain('http://u:***@x:1: must be host:port, redis:// or rediss://');
    expect(node).not.toMatch(/Secret/);
    const base = problems(() => loadSettings({ DASHSCOPE_BASE_URL: 'https://proxyuser:Base-Secret@dashscope.example.com' }));
    expect(base).toContain('DASHSCOPE_API_KEY: missing; it is required for https://dashscope.example.com (set it');
    expect(base).not.toMatch(/Secret|proxyuser/);
    // A "/", "#", "?" or "%" not percent-encoded in a password: ioredis failed on it as INTERNAL, exit 1.
    for (const url of ['redis://:ab/Pw-Secret@127.0.0.1:6391', 'redis://:ab#Pw-Secret@127.0.0.1:6391', 'redis://:ab%zzPw-Secret@127.0.0.1:6391', 'redis://user:ab?Pw-Secret@h:1']) {
      const message = problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_URL: url }));
      expect(message, url).toMatch(/- REDIS_URL: redis:\/\/(user)?:\*\*\*@.* is not a URL; percent-encode "\/", "#", "\?", "@" and "%" in a user name or password/);
      expect(message, url).not.toContain('Pw-Secret');
    }
    expect(loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_URL: 'redis://:ab%2FPw@127.0.0.1:6391' }).redisUrl).toBe('redis://:ab%2FPw@127.0.0.1:6391');
  });

  it('refuses a Redis URL with more after the host than a database number, naming neither it nor the password (an "@" then "/", "#" or "?" in a password dialled the password as a host)', () => {
    // Each parses as a URL: host "secrethost" or "ss", the rest of the password and the real host in
    // its path, query or fragment. Before: REDIS_UNAVAILABLE (getaddrinfo ENOTFOUND secrethost), exit 1.
    const cases: Array<[string, string]> = [
      ['redis://:Pw@secrethost/rest@127.0.0.1:17103', 'redis://:***@127.0.0.1:17103/…'],
      ['redis://carol:p@ss/w#rd%x?@127.0.0.1:17103', 'redis://carol:***@127.0.0.1:17103/…'],
      ['redis://:Pw@secrethost?rest@127.0.0.1:17103', 'redis://:***@127.0.0.1:17103/…'],
      ['redis://:Pw@127.0.0.1:17103/rest', 'redis://:***@127.0.0.1:17103/…'],
      ['redis://127.0.0.1:17103/0?password=Pw-query', 'redis://127.0.0.1:17103/…'],
      ['redis://127.0.0.1:17103/#Pw-fragment', 'redis://127.0.0.1:17103/…'],
    ];
    for (const [url, named] of cases) {
      const message = problems(() => loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_URL: url }));
      expect(message, url).toContain(`- REDIS_URL: ${named} is not a Redis URL embedq reads: after host:port it takes only a database number (/0)`);
      expect(message, url).toContain('percent-encode "/", "#", "?", "@" and "%" in a user name or password');
      expect(message, url).not.toMatch(/Pw|secrethost|rest|ss\/w|rd%x/);
    }
    for (const url of ['redis://127.0.0.1:17103', 'redis://127.0.0.1:17103/', 'redis://:p%40ss%2Fw%23rd@127.0.0.1:17103/3']) {
      expect(loadSettings({ DASHSCOPE_API_KEY: 'k', REDIS_URL: url }).redisUrl, url).toBe(url);
    }
  });
});
