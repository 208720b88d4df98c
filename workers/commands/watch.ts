import { FINAL_STATES, type CorpusJobRecord } from '../../jobs/job-record.js';
import { JobLostError, RedisUnavailableError } from '../../jobs/job-errors.js';
import { liveWorkers } from '../../src/metrics/read-metrics.js';
import { describeRedisTarget } from '../../src/redis/redis-client.js';
import { isRedisOutage, REDIS_ANSWER_MS, RedisNotAnsweringError, withinRedisDeadline } from '../../src/redis/redis-deadline.js';
import { sleep } from '../../src/sleep.js';
import { redisTarget, type Services } from '../services.js';
import { lastRetryLines, processedLines, progressLine } from './progress.js';

/** While Redis is unreachable, how often `--wait` tries it again. */
const RECONNECT_MS = 2_000;
/** `--wait` repeats a job's latest failed attempt at most this often (a 429 storm notes one a second). */
const RETRY_NOTE_MS = 30_000;

/**
 * `submit --wait` and `schedule run --wait`: follows the job to its end and returns the exit code
 * (0 when it completed; otherwise 1, after a line naming its state and error). Ctrl-C stops the
 * following, not the job, and says so: it exited 130 without a word, and the job went on unseen.
 */
export async function waitForEnd(services: Services, corpusJobId: string): Promise<number> {
  const interrupted = (): void => {
    process.stderr.write(`\nstopped following ${corpusJobId}; it goes on in the workers (embedq status ${corpusJobId} shows it, embedq cancel ${corpusJobId} stops it)\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    const record = await watchJob(services, corpusJobId);
    if (record.state === 'completed') return 0;
    process.stderr.write(`job ${corpusJobId} ${record.state}: ${record.errorCode ?? ''} ${record.error ?? ''}\n`);
    return 1;
  } finally {
    process.off('SIGINT', interrupted);
  }
}

/**
 * Follows a corpus job until it ends, drawing progress on `stream` (a redrawn line on a terminal,
 * a line every 5 s otherwise). Returns the final record.
 *
 * A Redis outage does not end the wait: the job goes on in the workers once Redis is back, and a
 * `--wait` in a pipeline that exited 1 at a restart of Redis failed a run that then completed. It
 * says so, tries Redis again every 2 s, and gives up (REDIS_UNAVAILABLE) after
 * EMBEDQ_WAIT_REDIS_OUTAGE_S. A Redis that keeps the connection but answers nothing (stopped, a
 * network dropping packets) is such an outage once a read has waited REDIS_ANSWER_MS: before, the
 * read waited for good, without a word and past any EMBEDQ_WAIT_REDIS_OUTAGE_S.
 */
export async function watchJob(
  services: Services,
  corpusJobId: string,
  stream: NodeJS.WriteStream = process.stderr,
  pollMs = 500,
): Promise<CorpusJobRecord> {
  const interactive = stream.isTTY === true;
  let lastPrinted = 0;
  let lostAt: number | undefined;
  let noWorkerNote = noLiveWorkerNote(services, corpusJobId);
  const retryNote = newRetryNote();
  const samples: Array<{ at: number; done: number }> = [];
  for (;;) {
    let record: CorpusJobRecord | undefined;
    const askedAt = Date.now();
    try {
      record = await withinRedisDeadline(services.corpora.get(corpusJobId));
    } catch (error) {
      if (!isRedisOutage(error)) throw error;
      // A Redis that answers nothing has been lost since the read that went unanswered was sent.
      lostAt = await waitOutage(services, corpusJobId, stream, saidAsNotAnswering(error), lostAt ?? askedAt, lostAt !== undefined);
      continue;
    }
    if (lostAt !== undefined) {
      stream.write(`Redis is back after ${Math.round((Date.now() - lostAt) / 1000)} s; following ${corpusJobId} again\n`);
      lostAt = undefined;
      // The workers could not write their heartbeats meanwhile: they get the grace again (after a
      // 25 s outage, "no worker is live" was said of a worker that was).
      noWorkerNote = noLiveWorkerNote(services, corpusJobId);
    }
    if (!record) throw new JobLostError(corpusJobId);
    const now = Date.now();
    samples.push({ at: now, done: processedLines(record) });
    while (samples.length > 2 && now - samples[0]!.at > 10_000) samples.shift();
    const first = samples[0]!;
    const rate = now > first.at ? ((processedLines(record) - first.done) * 1000) / (now - first.at) : undefined;
    const line = progressLine(record, rate);
    const final = FINAL_STATES.has(record.state);
    if (interactive) {
      stream.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    } else if (final || now - lastPrinted >= 5_000) {
      stream.write(`${line}\n`);
      lastPrinted = now;
    }
    if (final) return record;
    const note = (await noWorkerNote(now)) ?? retryNote(record, now);
    if (note) stream.write(`${interactive ? '\r\x1b[2K' : ''}${note}\n`);
    await sleep(pollMs);
  }
}

/**
 * The job's latest failed attempt (`retrying  write-shard attempt 8 of 14: STORAGE_UNAVAILABLE: …`),
 * as `status` shows it, when one newer than the last said came since the wait began, at most every
 * RETRY_NOTE_MS; undefined otherwise. Through an S3 outage the progress line alone read `0 lines/s`
 * with no word of why, while `status` said it.
 */
function newRetryNote(): (record: CorpusJobRecord, now: number) => string | undefined {
  let saidAt = 0;
  // The last attempt said (stamped by Redis's clock); at first, the one before the wait began.
  let said: number | undefined;
  return (record, now) => {
    if (said === undefined) said = record.lastRetryAt ?? 0;
    if (record.lastRetryAt === null || record.lastRetryAt <= said || now - saidAt < RETRY_NOTE_MS) return undefined;
    const [line] = lastRetryLines(record, now);
    if (line === undefined) return undefined;
    said = record.lastRetryAt;
    saidAt = now;
    return line;
  };
}

/** How long a job may wait with no live worker before `--wait` says so: a worker started beside the submit has sent its first heartbeat by then. */
const NO_WORKER_GRACE_MS = 10_000;

/**
 * A line to print when no worker has been live for a while (a job waits for one, and the progress
 * line alone showed it queued without a word), once per such spell; undefined otherwise.
 */
function noLiveWorkerNote(services: Services, corpusJobId: string): (now: number) => Promise<string | undefined> {
  const startedAt = Date.now();
  let checkedAt = startedAt;
  let said = false;
  return async (now) => {
    if (now - startedAt < NO_WORKER_GRACE_MS || now - checkedAt < 5_000) return undefined;
    checkedAt = now;
    // A Redis that fails here fails the next read of the job too, which waits the outage out.
    const live = await liveWorkers(services.redis, services.settings.redisPrefix).then((workers) => workers.length > 0, () => true);
    if (live) {
      said = false;
      return undefined;
    }
    if (said) return undefined;
    said = true;
    return `no worker is live (no heartbeat in the last 20 s): ${corpusJobId} waits until an \`embedq worker\` runs against this Redis and EMBEDQ_REDIS_PREFIX`;
  };
}

/**
 * A command's connection fails a command after 5 s with ioredis's bare "Command timed out" (see
 * createServices), about when the read's own deadline would: said the same way as the deadline.
 */
function saidAsNotAnswering(error: Error): Error {
  return error.message === 'Command timed out' ? new RedisNotAnsweringError(REDIS_ANSWER_MS) : error;
}

/**
 * One turn of waiting out a Redis outage that began at `since`; returns `since`. Throws once it
 * lasted too long. `said`: whether the outage has been announced already.
 */
async function waitOutage(services: Services, corpusJobId: string, stream: NodeJS.WriteStream, error: Error, since: number, said: boolean): Promise<number> {
  const budgetMs = services.settings.waitRedisOutageMs;
  const target = describeRedisTarget(redisTarget(services.settings));
  if (!said && budgetMs > 0) {
    stream.write(`${stream.isTTY ? '\n' : ''}lost Redis at ${target} (${error.message}); ${corpusJobId} goes on in the workers once it is back: waiting up to ${budgetMs / 1000} s for it\n`);
  }
  if (Date.now() - since >= budgetMs) {
    throw new RedisUnavailableError(
      `lost Redis at ${target} for ${Math.round((Date.now() - since) / 1000)} s while following ${corpusJobId} (${error.message}; EMBEDQ_WAIT_REDIS_OUTAGE_S is ${budgetMs / 1000}); the job goes on in the workers once Redis is back: embedq status ${corpusJobId}`,
    );
  }
  await sleep(RECONNECT_MS);
  // A command's connection gives up after a few reconnects (it must not hang on a Redis that never
  // answers); start it again. Refused while it is still trying by itself: then it goes on trying.
  await services.redis.connect().catch(() => undefined);
  return since;
}
