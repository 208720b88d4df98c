import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Manifest } from '../../src/output/manifest.js';
import { startWorkers, type WorkerPool } from '../../workers/start-workers.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { queryParquet } from '../support/duckdb.js';
import { downloadPrefix, removeFolder, runEmbedq, startWorld, waitForJob, type World } from '../support/world.js';

/** Every file under a folder, as `/`-separated relative paths (folders show only through their files). */
async function filesUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(folder, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'))
    .sort();
}

/** Folders under a folder (an empty `_tmp/` left behind shows here). */
async function foldersUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name);
}

/** Invariant 7 and issue 9 items 1, 2 and 10: one writer per output, clean re-runs, nothing left over. */
describe('one writer per output', () => {
  let world: World;
  let pool: WorkerPool;
  let folder: string;
  const corpus = buildCorpus('data/', { textLines: 150 });
  const embedded = corpus.expected.filter((line) => line.kind === 'text').length;

  beforeAll(async () => {
    world = await startWorld({ faults: { latencyMs: { min: 2, median: 5, p99: 20 } } });
    for (const object of corpus.objects) await world.put(object.key, object.body);
    pool = startWorkers(world.services, { concurrency: 8 });
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-owner-'));
  });
  afterAll(async () => {
    await pool.close();
    await world.close();
    await removeFolder(folder);
  });

  it('refuses the second of two submits into one output at once, naming the job that holds it', async () => {
    const args = ['submit', 's3://corpus/data/', '--out', 's3://out/same/', '--shard-rows', '50'];
    const [a, b] = await Promise.all([runEmbedq(world.env, args), runEmbedq(world.env, [...args.slice(0, 3), 's3://out/same', ...args.slice(4)])]);
    const winner = a.code === 0 ? a : b;
    const loser = a.code === 0 ? b : a;
    expect([a.code, b.code].sort()).toEqual([0, 2]);
    const id = winner.stdout.trim();
    expect(loser.stderr).toContain(`OUTPUT_LEASED: s3://out/same`);
    expect(loser.stderr).toContain(`being written by job ${id}`);
    expect((await waitForJob(world.services, id)).state).toBe('completed');
    // Ended: the lease is free, but the output is not empty.
    const again = await runEmbedq(world.env, args);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/OUTPUT_NOT_EMPTY: s3:\/\/out\/same\/ already holds a run's files \(.*part-00000\.parquet/);
  });

  it("takes over a lease whose job Redis lost (it refused every run for good), not one a submit under way holds", async () => {
    const { redis, corpora } = world.services;
    const args = (output: string): string[] => ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '50'];
    // What an evicted or deleted job record leaves: a lasting lease naming a job that does not exist.
    await redis.set(corpora.leases.keyOf('s3://out/orphan/'), 'cj-lost-record');
    expect(await runEmbedq(world.env, ['cancel', 'cj-lost-record'])).toMatchObject({ code: 1 });
    const submitted = await runEmbedq(world.env, args('s3://out/orphan/'));
    expect(submitted.code, submitted.stderr).toBe(0);
    expect((await waitForJob(world.services, submitted.stdout.trim())).state).toBe('completed');
    // A submit still listing or clearing its output holds the lease for a while, its record not yet made.
    expect(await corpora.leases.acquire('s3://out/underway/', 'cj-underway')).toBeUndefined();
    const ttl = await redis.pttl(corpora.leases.keyOf('s3://out/underway/'));
    expect(ttl).toBeGreaterThan(14 * 60_000);
    const refused = await runEmbedq(world.env, args('s3://out/underway/'));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('being written by job cj-underway');
    // Its record made, the lease lasts until the job ends.
    expect(await corpora.leases.confirm('s3://out/underway/', 'cj-underway')).toBe(true);
    expect(await redis.pttl(corpora.leases.keyOf('s3://out/underway/'))).toBe(-1);
    expect(await corpora.leases.confirm('s3://out/underway/', 'cj-other')).toBe(false);
    await corpora.leases.release('s3://out/underway/', 'cj-underway');
  });

  it('takes a folder reached through a symbolic link for the folder: one lease, and no output inside the input through a link', async () => {
    const { corpora } = world.services;
    await mkdir(path.join(folder, 'real'), { recursive: true });
    await symlink(path.join(folder, 'real'), path.join(folder, 'link'));
    // Before, the link had a lease of its own, and two jobs wrote one folder (dimensions mixed, one manifest).
    expect(await corpora.leases.acquire(path.join(folder, 'real'), 'cj-real')).toBeUndefined();
    expect(await corpora.leases.acquire(`${path.join(folder, 'link')}/`, 'cj-link')).toEqual({ jobId: 'cj-real', ending: false });
    expect(await corpora.leases.acquire(path.join(folder, 'link', 'deeper', 'new'), 'cj-deeper')).toBeUndefined(); // another output
    await corpora.leases.release(path.join(folder, 'link'), 'cj-real');
    expect(await corpora.leases.holder(path.join(folder, 'real'))).toBeUndefined();
    // The next run of the input would read the shards as corpus lines.
    await writeFile(path.join(folder, 'real', 'doc.txt'), 'a line\n');
    const inside = await runEmbedq(world.env, ['submit', path.join(folder, 'real'), '--out', path.join(folder, 'link', 'vectors')]);
    expect(inside.code).toBe(2);
    expect(inside.stderr).toContain('is inside the input');
  });

  it('refuses an output inside the input prefix (submit and schedule add): the next run would read the shards as lines', async () => {
    const submit = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://corpus/data/vectors/']);
    expect(submit.code).toBe(2);
    expect(submit.stderr).toContain('- --out: s3://corpus/data/vectors/ is inside the input s3://corpus/data/');
    // Spelled with `..`, which s3rver resolves, it went through and the run wrote into its input.
    const dotted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://corpus/zz/../data/vectors/']);
    expect(dotted.code).toBe(2);
    expect(dotted.stderr).toContain('"." and ".." are not allowed as parts of an S3 key');
    const schedule = await runEmbedq(world.env, ['schedule', 'add', 'inside', 's3://corpus/data/', '--cron', '0 3 * * *', '--out', 's3://corpus/data/v/{date}/']);
    expect(schedule.code).toBe(2);
    expect(schedule.stderr).toContain('is inside the input s3://corpus/data/');
    expect(await world.services.corpora.list()).not.toContainEqual(expect.objectContaining({ options: expect.objectContaining({ output: 's3://corpus/data/vectors/' }) }));
    // A local output that is a file: refused at submit, naming it (it used to be accepted and fail
    // the job at its first write).
    const file = path.join(folder, 'not-a-folder');
    await writeFile(file, 'x');
    const local = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', file]);
    expect(local.code).toBe(2);
    expect(local.stderr).toContain(`STORAGE_ERROR: list ${file}: it is a file, not a folder`);
  });

  it('refuses to retry a stopped job once another job took its output: resumed, it completed over a mix of both runs', async () => {
    const output = 's3://out/retaken/';
    // Slow answers keep the first job running until it is cancelled.
    world.emulator.setFaults({ latencyMs: { min: 5_000, median: 5_000, p99: 5_000 } });
    const first = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '100', '--dimension', '64', '--output-type', 'dense']);
    expect(first.code, first.stderr).toBe(0);
    const stopped = first.stdout.trim();
    const cancelled = await runEmbedq(world.env, ['cancel', stopped]);
    world.emulator.setFaults({ latencyMs: { min: 2, median: 5, p99: 20 } });
    expect(cancelled.code, cancelled.stderr).toBe(0);
    const second = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '20', '--output-type', 'dense', '--overwrite']);
    expect(second.code, second.stderr).toBe(0);
    const taker = second.stdout.trim();
    expect((await waitForJob(world.services, taker)).state).toBe('completed');

    const retried = await runEmbedq(world.env, ['retry', stopped]);
    expect(retried.code).toBe(1);
    expect(retried.stderr).toContain(`cannot retry ${stopped}: job ${taker} took its output since it stopped`);
    expect((await world.services.corpora.get(stopped))!.state).toBe('cancelled');
    // The output is the second run's alone: its manifest, its shards, nothing of the first.
    const { folder: copy } = await downloadPrefix(world.s3, 'out', 'retaken/');
    try {
      const manifest = JSON.parse(await readFile(path.join(copy, '_manifest.json'), 'utf8')) as Manifest;
      expect(manifest.job_id).toBe(taker);
      const rows = await queryParquet(`SELECT count(*) AS n, min(len(dense)) AS low, max(len(dense)) AS high FROM read_parquet('${copy}/part-*.parquet')`);
      expect(rows).toEqual([{ n: BigInt(embedded), low: 1024n, high: 1024n }]);
    } finally {
      await removeFolder(copy);
    }
  });

  it('refuses at submit an output it cannot write (read-only credentials, a path under a file): before, the job paid for a shard and failed at its first write', async () => {
    // Read-only credentials: a proxy before s3rver answers writes as S3 does without s3:PutObject.
    const proxy = createServer((request, response) => {
      if (request.method === 'PUT' || request.method === 'DELETE' || request.method === 'POST') {
        request.resume();
        request.on('end', () =>
          response
            .writeHead(403, { 'content-type': 'application/xml' })
            .end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'),
        );
        return;
      }
      const forwarded = httpRequest(`${world.s3.endpoint}${request.url}`, { method: request.method, headers: request.headers }, (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      });
      request.pipe(forwarded);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const before = world.emulator.stats().requests;
    try {
      const readOnly = { ...world.env, AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` };
      const refused = await runEmbedq(readOnly, ['submit', 's3://corpus/data/', '--out', 's3://out/read-only/']);
      expect(refused.code).toBe(2);
      // One line, its own: no SDK notice around it.
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toMatch(/STORAGE_ERROR: cannot write to the output s3:\/\/out\/read-only\/: .*access denied \(check the credentials/);
    } finally {
      proxy.closeAllConnections();
      proxy.close();
    }
    const underFile = path.join(folder, 'a-file', 'vectors');
    await writeFile(path.join(folder, 'a-file'), 'x');
    const local = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', underFile]);
    expect(local.code).toBe(2);
    expect(local.stderr).toMatch(/STORAGE_ERROR: cannot write to the output .*a-file\/vectors: .*a part of the path is a file/);
    // Under a link to a share not mounted: said as such (it was "a part of the path is a file").
    const unmounted = path.join(folder, 'share');
    await symlink('/nonexistent-mount/share', unmounted);
    const dangling = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', path.join(unmounted, 'run1')]);
    expect(dangling.code).toBe(2);
    expect(dangling.stderr).toContain(`STORAGE_ERROR: cannot write to the output ${unmounted}/run1: cannot create files in ${unmounted}: it is a link that leads nowhere (ENOENT)`);
    // A file system that refuses new folders where their parent exists: Node's recursive mkdir
    // spun there for good, a core busy, and the submit never ended.
    if (existsSync('/proc/sys')) {
      const proc = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', '/proc/sys/embedq-out']);
      expect(proc.code, proc.stderr).toBe(2);
      expect(proc.stderr).toContain('cannot create the folder /proc/sys/embedq-out: /proc/sys takes no new folders (ENOENT)');
    }
    // Nothing was recorded or paid for, and neither output stays leased.
    expect(world.emulator.stats().requests).toBe(before);
    const outputs = (await world.services.corpora.list()).map((record) => record.options.output);
    expect(outputs.filter((output) => output.includes('read-only') || output.includes('a-file'))).toEqual([]);
    expect(await world.services.corpora.leases.holder('s3://out/read-only/')).toBeUndefined();
    expect(await world.services.corpora.leases.holder(underFile)).toBeUndefined();
  });

  it('re-runs with fewer shards: refused without --overwrite; with it, the output holds exactly the new run', async () => {
    const output = path.join(folder, 'rerun');
    const first = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '20', '--output-type', 'dense']);
    expect(first.code, first.stderr).toBe(0);
    expect((await waitForJob(world.services, first.stdout.trim())).state).toBe('completed');
    const firstManifest = JSON.parse(await readFile(path.join(output, '_manifest.json'), 'utf8')) as Manifest;
    expect(firstManifest.shards.length).toBeGreaterThan(4);
    // A write a killed worker left behind (item 10): finalize removes it.
    await writeFile(path.join(output, 'part-00001.parquet.tmp-0123456789abcdef'), 'half a shard');

    const refused = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '80', '--output-type', 'dense']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('OUTPUT_NOT_EMPTY');
    expect(refused.stderr).toContain('--overwrite');

    const second = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', output, '--shard-rows', '80', '--output-type', 'dense', '--overwrite']);
    expect(second.code, second.stderr).toBe(0);
    expect((await waitForJob(world.services, second.stdout.trim())).state).toBe('completed');
    const manifest = JSON.parse(await readFile(path.join(output, '_manifest.json'), 'utf8')) as Manifest;
    expect(manifest.shards.length).toBe(Math.ceil(corpus.expected.length / 80));
    expect(manifest.counts.failed).toBeGreaterThan(0); // error records went through _tmp/
    // Exactly the manifest's shards plus the three files: no old shards, no temp files, no _tmp/.
    expect(await filesUnder(output)).toEqual([...manifest.shards.map((shard) => shard.file), '_SUCCESS', '_errors.jsonl', '_manifest.json'].sort());
    expect(await foldersUnder(output)).toEqual([]);
    const [count] = await queryParquet(`SELECT count(*) AS n FROM read_parquet('${output}/*.parquet')`);
    expect(Number(count!.n)).toBe(embedded);
  });
});
