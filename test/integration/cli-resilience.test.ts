import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort, startPrivateRedis } from '../../src/redis/private-redis.js';
import { sleep } from '../../src/sleep.js';
import { buildCorpus } from '../support/corpus-fixture.js';
import { freezeRedis } from '../support/freeze-redis.js';
import { runEmbedq, spawnEmbedq, startWorld, stopProcess, type World } from '../support/world.js';

/** Runs a command, but never longer than `limitMs` (a hang is the defect these tests look for). */
async function runBounded(env: NodeJS.ProcessEnv, args: string[], limitMs = 15_000): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  const child = spawnEmbedq(env, args);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), limitMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  clearTimeout(timer);
  return { code, stderr, ms: Date.now() - started };
}

describe('commands never wait forever (issue 9, items 4 and 5)', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
    for (const object of buildCorpus('data/', { textLines: 30 }).objects) await world.put(object.key, object.body);
  });
  afterAll(() => world.close());

  it('gives up on an unreachable Redis within seconds, naming REDIS_URL with the password masked', async () => {
    const port = await freePort(); // nothing listens there
    const env = { ...world.env, REDIS_URL: `redis://:hunter2secret@127.0.0.1:${port}` };
    // Starting a command (node + tsx) takes seconds on a loaded 2-core machine: measure it, and hold
    // each command to that plus the 5 s Redis budget and a margin. One at a time, so three
    // compiling processes do not slow each other down.
    const startup = (await runBounded(env, ['--help'], 30_000)).ms;
    const results = [];
    for (const args of [['status', 'cj-abc-123'], ['list'], ['submit', 's3://corpus/data/', '--out', 's3://out/unreachable/', '--wait']]) {
      results.push(await runBounded(env, args, startup + 20_000));
    }
    for (const result of results) {
      expect(result.code, result.stderr).toBe(1);
      expect(result.ms).toBeLessThan(startup + 8_000);
      // The socket's reason, where it said "no answer within 5 s" of a refusal after 3.
      expect(result.stderr).toContain(`REDIS_UNAVAILABLE: cannot reach Redis at REDIS_URL=redis://:***@127.0.0.1:${port} (connect ECONNREFUSED 127.0.0.1:${port})`);
      expect(result.stderr).not.toContain('hunter2secret');
      expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
      // That one line: no log line per reconnection attempt before it (each carried a stack).
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it('exits 1 after saying REDIS_UNAVAILABLE when Redis keeps its connections but answers nothing (it said so, then never exited)', { timeout: 120_000 }, async () => {
    const redis = await startPrivateRedis();
    const env = { ...world.env, REDIS_URL: redis.url };
    let thaw: (() => void) | undefined;
    try {
      const startup = (await runBounded(env, ['--help'], 30_000)).ms;
      thaw = await freezeRedis(redis);
      // Side by side: each waits out its own 5 s.
      const commands = [['list'], ['status', 'cj-abc-123'], ['submit', 's3://corpus/data/', '--out', 's3://out/frozen/']];
      const results = await Promise.all(commands.map((args) => runBounded(env, args, startup + 20_000)));
      results.forEach((result, index) => {
        const args = commands[index]!.join(' ');
        expect(result.code, `${args}: ${result.stderr}`).toBe(1);
        expect(result.stderr).toContain(`REDIS_UNAVAILABLE: cannot reach Redis at REDIS_URL=${redis.url} (no answer within 5 s)`);
        // The 5 s budget and at most 1 s to close, with room for a loaded machine (three at once): a hang is the defect.
        expect(result.ms, args).toBeLessThan(startup * 3 + 10_000);
      });
    } finally {
      thaw?.();
      await redis.stop();
    }
  });

  it('says Redis refused the credentials (exit 2), not that it did not answer; a worker and the dashboard exit at start instead of retrying forever', async () => {
    // No such ACL user: Redis answers AUTH with WRONGPASS at once.
    const url = new URL(world.env.REDIS_URL!);
    const env = { ...world.env, REDIS_URL: `redis://nosuchuser:hunter2secret@${url.host}` };
    for (const args of [['status', 'cj-abc-123'], ['worker'], ['dashboard', '--port', '0']]) {
      const result = await runBounded({ ...env, DASHSCOPE_API_KEY: 'sk-test' }, args, 30_000);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain(`CONFIG_INVALID: Redis at REDIS_URL=redis://nosuchuser:***@${url.host} refused the credentials (WRONGPASS`);
      expect(result.stderr).not.toContain('hunter2secret');
      expect(result.stderr).not.toMatch(/\n\s+at /);
      expect(result.stderr.trim().split('\n')).toHaveLength(1); // no queue's error (with its stack) after it
    }
  });

  it('refuses a REDIS_URL database number Redis does not have (CONFIG_INVALID, exit 2) in commands, the worker and the dashboard: they used database 0', async () => {
    const url = new URL(world.env.REDIS_URL!);
    const admin = new Redis(world.env.REDIS_URL!);
    const user = `db-${process.pid}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>db-Secret', '~*', '&*', '+@all');
    try {
      for (const [database, args] of [
        ['16', ['list']],
        ['99', ['submit', 's3://corpus/data/', '--out', 's3://out/no-such-database/']],
        ['99', ['worker']],
        ['16', ['dashboard', '--port', '0']],
      ] as const) {
        const env = { ...world.env, REDIS_URL: `redis://${user}:db-Secret@${url.host}/${database}`, DASHSCOPE_API_KEY: 'sk-test' };
        const result = await runBounded(env, [...args], 30_000);
        expect(result.code, `${args[0]}: ${result.stderr}`).toBe(2);
        expect(result.stderr).toContain(`CONFIG_INVALID: Redis at REDIS_URL=redis://${user}:***@${url.host}/${database} has no database ${database} (ERR DB index is out of range)`);
        expect(result.stderr).not.toContain('db-Secret');
        expect(result.stderr).not.toMatch(/\n\s+at /);
      }
      // The submit put no job into database 0 instead.
      expect((await runEmbedq(world.env, ['list'])).stdout).not.toContain('no-such-database');
    } finally {
      await admin.call('ACL', 'DELUSER', user);
      admin.disconnect();
    }
  });

  it('says REDIS_CLUSTER_NODES names a Redis without cluster mode (exit 2) where it said "no answer" of a Redis that answered', async () => {
    const { hostname: host, port } = new URL(world.env.REDIS_URL!);
    const { REDIS_URL: _url, ...rest } = world.env;
    const env = { ...rest, REDIS_CLUSTER_NODES: `${host}:${port}`, EMBEDQ_REDIS_PREFIX: '{notacluster}' };
    for (const args of [['list'], ['worker'], ['dashboard', '--port', '0']]) {
      const result = await runBounded(env, args, 30_000);
      expect(result.code, `${args[0]}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toContain(`CONFIG_INVALID: REDIS_CLUSTER_NODES names redis://${host}:${port}, a Redis without cluster mode (cluster_enabled:0)`);
    }
    // Behind a seed that is down: every seed is asked (only the first was, and the worker ran on).
    const behindDown = { ...env, REDIS_CLUSTER_NODES: `127.0.0.1:${await freePort()},${host}:${port}` };
    for (const args of [['list'], ['worker']]) {
      const result = await runBounded(behindDown, args, 30_000);
      expect(result.code, `${args[0]}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toContain(`CONFIG_INVALID: REDIS_CLUSTER_NODES names redis://${host}:${port}, a Redis without cluster mode`);
    }
  });

  it('a worker whose cluster does not answer logs the outage once and reminders, not a stack per reconnection attempt (529 lines in 8 s)', async () => {
    const { REDIS_URL: _url, ...rest } = world.env;
    const worker = spawnEmbedq({ ...rest, REDIS_CLUSTER_NODES: `127.0.0.1:${await freePort()}`, EMBEDQ_REDIS_PREFIX: '{gone}' }, ['worker']);
    let log = '';
    worker.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    worker.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const lines = (): string[] => log.trim().split('\n').filter(Boolean);
    // However long the worker takes to start on a busy machine, then 8 s of reconnection attempts.
    await expect.poll(() => lines().some((line) => line.includes('REDIS_UNAVAILABLE') && line.includes('lost Redis')), { timeout: 30_000 }).toBe(true);
    await sleep(8_000);
    await stopProcess(worker, 'SIGKILL');
    expect(lines().length, log.slice(0, 2_000)).toBeLessThan(20);
    expect(log).not.toContain('"type":"ClusterAllFailedError"');
  });

  it("prints none of BullMQ's plain-text eviction warnings (4 a command, ~12 a worker, also without a maxmemory): status says it once, with what to do", async () => {
    const redis = await startPrivateRedis();
    const admin = new Redis(redis.url);
    try {
      await admin.config('SET', 'maxmemory-policy', 'volatile-lru');
      const env = { ...world.env, REDIS_URL: redis.url };
      const list = await runEmbedq(env, ['list']);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stderr).not.toContain('IMPORTANT! Eviction policy');
      // With a maxmemory the policy matters: embedq's own line says so.
      await admin.config('SET', 'maxmemory', '512mb');
      const submitted = await runEmbedq(env, ['submit', 's3://corpus/data/', '--out', 's3://out/evicting/']);
      expect(submitted.stderr).not.toContain('IMPORTANT! Eviction policy');
      const status = await runEmbedq(env, ['status', submitted.stdout.trim()]);
      expect(status.stdout).toContain('maxmemory-policy is volatile-lru');
      // No worker runs here: status says what the job waits for.
      expect(status.stdout).toContain('workers   none live (no heartbeat in the last 20 s): the job waits until an `embedq worker` runs');
      expect(status.stderr).not.toContain('IMPORTANT! Eviction policy');
    } finally {
      admin.disconnect();
      await redis.stop();
    }
  });

  it('refuses a list --limit that is not a whole number above 0 (0 listed every job, 1.5 said INTERNAL)', async () => {
    for (const limit of ['0', '-1', '1.5', 'abc', '99999999999999999999']) {
      const result = await runBounded(world.env, ['list', '--limit', limit]);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain(`CONFIG_INVALID: Invalid options:\n- limit: must be a whole number above 0, got "${limit}"`);
    }
  });

  it('names a bad job option by the flag that was typed (it said shardRows, outputType)', async () => {
    const result = await runBounded(world.env, ['plan', 's3://corpus/data/', '--shard-rows', '5', '--dimension', '100', '--out', 's3://corpus/data/v/']);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('CONFIG_INVALID: Invalid options:\n- --shard-rows: Too small: expected number to be >=10\n');
    expect(result.stderr).toContain('\n- --dimension: 100 is not allowed for text-embedding-v4; choose one of 2048, 1536, 1024, 768, 512, 256, 128, 64');
    expect(result.stderr).toContain('\n- --out: s3://corpus/data/v/ is inside the input s3://corpus/data/');
  });

  it('says a job Redis lost no longer exists: submit --wait, status and retry exit 1 without a stack', async () => {
    const child = spawnEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/lost/', '--wait']);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    while (!/cj-\S+/.test(stdout) && Date.now() < deadline) await sleep(50);
    const id = /cj-\S+/.exec(stdout)![0];
    // What a FLUSHALL or a restart without persistence does to this job (no workers run here).
    const keys = await world.services.redis.keys(`${world.settings.redisPrefix}:job:${id}*`);
    await world.services.redis.del(...keys);
    const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 15_000);
    expect(await exited).toBe(1);
    clearTimeout(timer);
    const lost = `JOB_LOST: job ${id} no longer exists in Redis (a mistyped id or another EMBEDQ_REDIS_PREFIX? was Redis flushed, restarted without persistence, or did it evict keys (a maxmemory-policy other than noeviction)? did the job end more than EMBEDQ_JOB_RETENTION_DAYS ago?)`;
    expect(stderr).toContain(lost);
    expect(stderr).not.toMatch(/\n\s+at /);
    for (const command of ['status', 'retry']) {
      const result = await runEmbedq(world.env, [command, id]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(lost);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
  });

  /** `submit --wait` against `redisUrl`, with what it printed so far. */
  const followJob = (env: NodeJS.ProcessEnv) => {
    const child = spawnEmbedq(env, ['submit', 's3://corpus/data/', '--out', `s3://out/redis-gone-${Date.now()}/`, '--wait']);
    const output = { stdout: '', stderr: '' };
    child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, output, exited };
  };

  it('submit --wait says when no worker is live (its job showed queued without a word), once, and finishes once one starts', async () => {
    const { child, output, exited } = followJob(world.env);
    const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 60_000);
    let worker: ReturnType<typeof spawnEmbedq> | undefined;
    try {
      await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      const id = /cj-\S+/.exec(output.stdout)![0];
      const note = `no worker is live (no heartbeat in the last 20 s): ${id} waits until an \`embedq worker\` runs against this Redis and EMBEDQ_REDIS_PREFIX\n`;
      await expect.poll(() => output.stderr, { timeout: 25_000 }).toContain(note);
      worker = spawnEmbedq(world.env, ['worker']);
      expect(await exited, output.stderr).toBe(0);
      expect(output.stderr.split(note)).toHaveLength(2);
    } finally {
      clearTimeout(timer);
      if (worker) await stopProcess(worker);
    }
  });

  it('Ctrl-C on submit --wait stops the following, not the job, and says so (it exited 130 without a word)', async () => {
    const { child, output, exited } = followJob(world.env);
    try {
      await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      const id = /cj-\S+/.exec(output.stdout)![0];
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      expect(output.stderr).toContain(`stopped following ${id}; it goes on in the workers (embedq status ${id} shows it, embedq cancel ${id} stops it)\n`);
      expect((await world.services.corpora.get(id))?.state).toBe('queued');
      expect((await runEmbedq(world.env, ['cancel', id])).code).toBe(0); // not left for the next test's worker
    } finally {
      await stopProcess(child, 'SIGKILL');
    }
  });

  it('submit --wait follows its job through a Redis restart, and exits 0 when the job completes', async () => {
    const redis = await startPrivateRedis({ appendOnly: true });
    const env = { ...world.env, REDIS_URL: redis.url };
    let worker: ReturnType<typeof spawnEmbedq> | undefined;
    const { child, output, exited } = followJob(env);
    const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 50_000);
    try {
      await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      await redis.kill();
      await expect.poll(() => output.stderr, { timeout: 10_000 }).toMatch(/lost Redis at REDIS_URL=redis:\/\/127\.0\.0\.1:\d+\/? \(.*\); cj-\S+ goes on in the workers once it is back: waiting up to 300 s for it\n/);
      await sleep(3_000); // longer than the command's own reconnects (3, ~2 s)
      await redis.restart();
      // The job was queued before the outage (no worker yet); one started now finishes it.
      worker = spawnEmbedq(env, ['worker']);
      expect(await exited, output.stderr).toBe(0);
      expect(output.stderr).toMatch(/Redis is back after \d+ s; following cj-\S+ again\n/);
      expect(output.stderr).not.toMatch(/REDIS_UNAVAILABLE|INTERNAL|\n\s+at /);
    } finally {
      clearTimeout(timer);
      if (worker) await stopProcess(worker);
      await redis.stop();
    }
  });

  it('submit --wait gives a live worker its grace again after a Redis outage longer than the heartbeat window: it said "no worker is live" of it', { timeout: 120_000 }, async () => {
    const redis = await startPrivateRedis({ appendOnly: true });
    const env = { ...world.env, REDIS_URL: redis.url };
    // 400 lines at 60 requests a minute: ~40 s of work, going on after the outage.
    for (const object of buildCorpus('slow/', { textLines: 400 }).objects) await world.put(object.key, object.body);
    const worker = spawnEmbedq({ ...env, EMBEDQ_QPM: '60' }, ['worker']);
    const child = spawnEmbedq(env, ['submit', 's3://corpus/slow/', '--out', `s3://out/grace-${Date.now()}/`, '--wait']);
    const output = { stdout: '', stderr: '' };
    child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    try {
      await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      const id = /cj-\S+/.exec(output.stdout)![0];
      await sleep(3_000);
      // Away longer than the 20 s in which a heartbeat counts: the worker's last one is then too old.
      await redis.kill();
      await sleep(23_000);
      // The worker reconnects after the command (its backoff may be longer): held until then.
      worker.kill('SIGSTOP');
      await redis.restart();
      await expect.poll(() => output.stderr, { timeout: 15_000 }).toMatch(new RegExp(`Redis is back after \\d+ s; following ${id} again\n`));
      await sleep(4_000);
      worker.kill('SIGCONT');
      // Past the grace (10 s) and the next check (5 s after it): the worker has beaten by then.
      await sleep(12_000);
      expect((await runEmbedq(env, ['status', id])).stdout).toMatch(/^state {5}running/m);
      expect(output.stderr).not.toContain('no worker is live');
      expect((await runEmbedq(env, ['cancel', id])).code).toBe(0);
    } finally {
      worker.kill('SIGCONT');
      await stopProcess(child, 'SIGKILL');
      await stopProcess(worker);
      await redis.stop();
    }
  });

  it('says REDIS_UNAVAILABLE, not INTERNAL, when Redis stays away longer than EMBEDQ_WAIT_REDIS_OUTAGE_S while submit --wait follows its job', async () => {
    const redis = await startPrivateRedis();
    try {
      const { child, output, exited } = followJob({ ...world.env, REDIS_URL: redis.url, EMBEDQ_WAIT_REDIS_OUTAGE_S: '3' });
      await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
      const id = output.stdout.trim();
      await redis.kill();
      const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 15_000);
      expect(await exited).toBe(1);
      clearTimeout(timer);
      expect(output.stderr).toContain(`${id} goes on in the workers once it is back: waiting up to 3 s for it\n`);
      expect(output.stderr).toMatch(
        new RegExp(`REDIS_UNAVAILABLE: lost Redis at REDIS_URL=redis://127\\.0\\.0\\.1:\\d+/? for [345] s while following ${id} \\(.*EMBEDQ_WAIT_REDIS_OUTAGE_S is 3\\); the job goes on in the workers once Redis is back: embedq status ${id}\n$`),
      );
      expect(output.stderr).not.toContain('INTERNAL');
      expect(output.stderr).not.toMatch(/\n\s+at /);
    } finally {
      await redis.stop();
    }
  });

  it('submit --wait takes a Redis that keeps its connections but answers nothing as an outage: says so, says when it is back, gives up after EMBEDQ_WAIT_REDIS_OUTAGE_S (it said nothing and waited for good)', { timeout: 120_000 }, async () => {
    const redis = await startPrivateRedis();
    let thaw: (() => void) | undefined;
    try {
      const { child, output, exited } = followJob({ ...world.env, REDIS_URL: redis.url, EMBEDQ_WAIT_REDIS_OUTAGE_S: '8' });
      const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 90_000);
      try {
        await expect.poll(() => output.stdout, { timeout: 20_000 }).toMatch(/cj-\S+/);
        const id = output.stdout.trim();
        const lost = `lost Redis at REDIS_URL=${redis.url} (Redis has not answered for 5 s (paused, overloaded, or the network drops its packets)); ${id} goes on in the workers once it is back: waiting up to 8 s for it\n`;
        thaw = await freezeRedis(redis);
        await expect.poll(() => output.stderr, { timeout: 12_000 }).toContain(lost);
        thaw();
        await expect.poll(() => output.stderr, { timeout: 12_000 }).toMatch(new RegExp(`Redis is back after \\d+ s; following ${id} again\\n`));
        thaw = await freezeRedis(redis);
        const frozenAt = Date.now();
        expect(await exited).toBe(1);
        // The outage's read (5 s) and the budget (8 s), then at most one more read's deadline.
        expect(Date.now() - frozenAt).toBeLessThan(22_000);
        expect(output.stderr.split(lost)).toHaveLength(3); // once per outage
        expect(output.stderr).toMatch(
          new RegExp(`REDIS_UNAVAILABLE: lost Redis at REDIS_URL=redis://127\\.0\\.0\\.1:\\d+ for \\d+ s while following ${id} \\(Redis has not answered for 5 s .*EMBEDQ_WAIT_REDIS_OUTAGE_S is 8\\); the job goes on in the workers once Redis is back: embedq status ${id}\\n$`),
        );
        expect(output.stderr).not.toMatch(/INTERNAL|\n\s+at /);
      } finally {
        clearTimeout(timer);
      }
    } finally {
      thaw?.();
      await redis.stop();
    }
  });

  it('exits 141 without a stack when its reader goes away (`embedq status <id> | grep -q running`)', async () => {
    const submitted = await runEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', 's3://out/piped/']);
    const id = submitted.stdout.trim();
    expect(id).toMatch(/^cj-/);
    for (const args of [['status', id], ['list']]) {
      const child = spawnEmbedq(world.env, args);
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      // The reader closes the pipe before the command writes: its first write fails with EPIPE.
      child.stdout!.destroy();
      const timer = setTimeout(() => void stopProcess(child, 'SIGKILL'), 20_000);
      const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
      clearTimeout(timer);
      expect(code, stderr).toBe(141);
      expect(stderr).toBe('');
    }
  });

  it('a worker says it lost Redis when Redis keeps its connections but answers nothing, and when it answers again (it said nothing through a 12-minute freeze)', { timeout: 120_000 }, async () => {
    const redis = await startPrivateRedis();
    const worker = spawnEmbedq({ ...world.env, REDIS_URL: redis.url, DASHSCOPE_API_KEY: 'sk-test', LOG_LEVEL: 'info' }, ['worker']);
    let stdout = '';
    worker.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    let thaw: (() => void) | undefined;
    const outageLines = (): Array<Record<string, unknown>> =>
      stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.code === 'REDIS_UNAVAILABLE' || line.msg === 'Redis is reachable again');
    try {
      await expect.poll(() => stdout, { timeout: 30_000 }).toContain('workers started');
      thaw = await freezeRedis(redis);
      // A check every 5 s, each with 5 s to answer.
      await expect.poll(outageLines, { timeout: 15_000 }).toHaveLength(1);
      expect(outageLines()[0]).toMatchObject({
        msg: 'lost Redis; waiting for it to come back',
        redis: `REDIS_URL=${redis.url}`,
        reason: expect.stringMatching(/^Redis has not answered for 5 s/),
      });
      await sleep(6_000); // another check goes unanswered: no second line for the same outage
      expect(outageLines()).toHaveLength(1);
      thaw();
      await expect.poll(() => outageLines().at(-1)?.msg, { timeout: 15_000 }).toBe('Redis is reachable again');
      expect(outageLines()).toHaveLength(2);
    } finally {
      thaw?.();
      await stopProcess(worker, 'SIGKILL');
      await redis.stop();
    }
  });

  it('a worker whose Redis password is rotated under it says so once, not a stack per reconnection, and says when Redis takes it again', async () => {
    const url = new URL(world.env.REDIS_URL!);
    const admin = new Redis(world.env.REDIS_URL!);
    const user = `rotated-${process.pid}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>first-Secret', '~*', '&*', '+@all');
    const worker = spawnEmbedq({ ...world.env, REDIS_URL: `redis://${user}:first-Secret@${url.host}`, DASHSCOPE_API_KEY: 'sk-test', LOG_LEVEL: 'info' }, ['worker']);
    let stdout = '';
    let stderr = '';
    worker.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    worker.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      const started = Date.now() + 20_000;
      while (!stdout.includes('workers started')) {
        if (Date.now() > started || worker.exitCode !== null) throw new Error(`the worker did not start: ${stderr}${stdout}`);
        await sleep(100);
      }
      const before = stdout.length;
      await admin.call('ACL', 'SETUSER', user, 'resetpass', '>second-Secret');
      await admin.call('CLIENT', 'KILL', 'USER', user);
      await sleep(4_000);
      const during = stdout
        .slice(before)
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      // Before: 27 lines a second, each `worker error` or `queue error` with WRONGPASS's stack.
      expect(during.filter((line) => line.err !== undefined || /worker error|queue error/.test(String(line.msg)))).toEqual([]);
      const outage = during.filter((line) => line.code === 'REDIS_UNAVAILABLE');
      // The kill's reset may be said first, as a lost connection; the refusal is said once.
      expect(outage.length, JSON.stringify(outage)).toBeLessThanOrEqual(2);
      const refusal = outage.filter((line) => String(line.msg).startsWith('Redis refused the credentials'));
      expect(refusal, JSON.stringify(outage)).toHaveLength(1);
      expect(refusal[0]).toMatchObject({ redis: `REDIS_URL=redis://${user}:***@${url.host}`, reason: expect.stringMatching(/^WRONGPASS/) });
      expect(stdout).not.toContain('first-Secret');
      await admin.call('ACL', 'SETUSER', user, 'resetpass', '>first-Secret');
      const deadline = Date.now() + 10_000;
      while (!stdout.includes('Redis is reachable again') && Date.now() < deadline) await sleep(100);
      expect(stdout).toContain('Redis is reachable again');
    } finally {
      await stopProcess(worker, 'SIGKILL');
      await admin.call('ACL', 'DELUSER', user);
      admin.disconnect();
    }
  });

  it('submit --wait says why a job makes no progress: its latest failed attempt, as status does (through an outage it showed only 0 lines/s)', { timeout: 90_000 }, async () => {
    const worker = spawnEmbedq(world.env, ['worker']);
    world.emulator.setFaults({ failRate500: 1 });
    const child = spawnEmbedq(world.env, ['submit', 's3://corpus/data/', '--out', `s3://out/retrying-${Date.now()}/`, '--wait']);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await expect.poll(() => stderr, { timeout: 40_000 }).toMatch(/^retrying {2}embed-batch attempt \d+ of 14: PROVIDER_UNAVAILABLE: .*\(\d+ s ago\)$/m);
      world.emulator.setFaults({ failRate500: 0 });
      expect(await exited).toBe(0);
      // Once, not at every poll: the next would come 30 s later at the soonest.
      expect(stderr.match(/^retrying {2}/gm)).toHaveLength(1);
    } finally {
      world.emulator.setFaults({ failRate500: 0 });
      await stopProcess(child, 'SIGKILL');
      await stopProcess(worker);
    }
  });
});
