import { JobStateLostError } from '../jobs/job-errors.js';
import { assertNoOtherJobsRun, manifestJobId, shardFilesOutOfPlace } from '../jobs/output-files.js';
import type { FinalizeJobPayload } from '../jobs/payloads.js';
import type { CorpusJobRecord } from '../jobs/job-record.js';
import type { ShardStats } from '../jobs/shard-ledger.js';
import { StorageError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import { buildManifest, type Manifest } from '../src/output/manifest.js';
import type { ObjectStore } from '../src/storage/object-store.js';
import { DELETES_FILE, DELTA_FOLDER, ERRORS_FILE, isOwnOutputKey, MANIFEST_FILE, SUCCESS_FILE, TEMP_FOLDER } from '../src/output/layout.js';
import { openOutput } from './output.js';
import type { JobContext } from './run-job.js';
import { publishScheduleLatest } from './schedule-outcome.js';
import type { Services } from './services.js';
import { StaleStepError, stepFence } from './step-fence.js';

/**
 * Last step: `_errors.jsonl` (every shard's error records, in row order), `_manifest.json`, then
 * `_SUCCESS`, written last of the output and only when every shard is in place. Then the scratch
 * files go, and only then is the job marked completed.
 */
export async function finalizeJob(payload: FinalizeJobPayload, context: JobContext): Promise<void> {
  const { corpora } = context.services;
  const { corpusJobId: id, generation } = payload;
  // The claim keeps a cancel from releasing the output's lease while this writes it. A failed
  // attempt gives it back, so the job can be cancelled between attempts, unless `_SUCCESS` is in
  // place: the output is complete, and the next attempt only cleans up and completes the job.
  if (!(await corpora.jobs.claimFinalize(id, generation))) return;
  const progress = { vouched: false };
  try {
    await finalizeClaimed(payload, context, progress);
  } catch (error) {
    if (!progress.vouched) await corpora.jobs.releaseFinalize(id, generation);
    throw error;
  }
}

async function finalizeClaimed(payload: FinalizeJobPayload, { services, logger }: JobContext, progress: { vouched: boolean }): Promise<void> {
  const { corpora } = services;
  const id = payload.corpusJobId;
  const record = await corpora.get(id);
  if (!record || record.state !== 'running' || record.generation !== payload.generation) return;
  const shards = await corpora.ledger.stats(id);
  if (shards.length < record.shardsWritten) throw new JobStateLostError(id, 'the ledger of written shards');
  if (record.totalShards === null || shards.length !== record.totalShards) {
    throw new Error(`finalize found ${shards.length} of ${record.totalShards ?? '?'} shards written`);
  }
  const output = openOutput(record.options.output, services);
  const ownManifest = await assertNoOtherJobsRun(output, id, record.options.output);
  const fence = stepFence(corpora, id, payload.generation);
  // Writes a killed process left half done (local temp files, S3 multipart uploads) go before
  // _SUCCESS vouches for the output. Fenced: paused here, this step removed the next job's
  // shard being written, and that job failed.
  await fence();
  const aborted = await output.store.abortIncompleteWrites(output.prefix, isOwnOutputKey);
  if (aborted > 0) logger.info({ aborted }, 'incomplete writes removed');
  // `_SUCCESS` beside this job's manifest: an earlier attempt got that far (and may have removed
  // the scratch files already); only the cleanup is left. A `_SUCCESS` alone is no proof: a paused
  // finalize of the job before put one into this job's output.
  const vouched = ownManifest && (await output.store.stat(output.prefix + SUCCESS_FILE)) !== undefined;
  if (!vouched) await assertShardFilesInPlace(services, record, payload.generation, shards, output);
  if (!vouched) await writeOutputFiles(id, record, shards, output, () => services.corpora.now(), { before: fence, after: (written) => withdrawIfStale(services, record, output, fence, written, logger) });
  progress.vouched = true;
  // The whole scratch folder of this job (its shards' error records), and nothing else's.
  for await (const object of output.store.list(`${output.prefix}${TEMP_FOLDER}/${id}/`)) await output.store.delete(object.key);
  await publishScheduleLatest(services, record, logger);
  // Completed last: whoever waits on the job's state finds the output with no scratch files left.
  if (!(await corpora.jobs.markCompleted(id, payload.generation))) return;
  await corpora.ledger.dropStats(id);
  await corpora.pins.drop(id);
  const counts = countsOf(record);
  logger.info({ ...counts, tokens: record.tokens, shards: shards.length }, 'corpus job completed');
}

/**
 * The fence again after each file readers trust (`written`: what this step wrote so far). A step
 * paused between its fence and a write (the window the fence leaves) finds its job ended: if
 * another job took the output since, what it wrote stands in that job's output. While that job
 * has no manifest there (it is still being written), those files go: it writes its own at its
 * end. Once it has one, only our manifest goes: `_SUCCESS` is that job's own or the same bytes,
 * and an errors file cannot be told from that job's, so it is said loudly, for the operator.
 * Then the step ends as stale.
 */
async function withdrawIfStale(
  services: Services,
  record: CorpusJobRecord,
  output: { store: ObjectStore; prefix: string },
  fence: () => Promise<void>,
  written: readonly string[],
  logger: Logger,
): Promise<void> {
  const stale = await fence().then(
    () => undefined,
    (error: unknown) => {
      if (error instanceof StaleStepError) return error;
      throw error;
    },
  );
  if (!stale) return;
  const taker = await services.corpora.leases.lastTaker(record.options.output);
  if (taker === undefined || taker === record.id) throw stale;
  if ((await manifestJobId(output)) === record.id) await output.store.delete(output.prefix + MANIFEST_FILE);
  const mayHaveReplaced = (): void =>
    logger.error(
      { output: record.options.output, otherJob: taker },
      `this step, paused past its lock, wrote ${ERRORS_FILE} into an output job ${taker} has finished since: its error records there may be missing or this job's; run job ${taker}'s input again to be sure`,
    );
  if ((await manifestJobId(output)) === taker) {
    if (written.includes(ERRORS_FILE)) mayHaveReplaced();
    throw stale;
  }
  for (const file of written) await output.store.delete(output.prefix + file);
  // That job may have finished while the files were being removed: its marker goes back.
  if ((await manifestJobId(output)) === taker) {
    await output.store.write(output.prefix + SUCCESS_FILE, '');
    if (written.includes(ERRORS_FILE)) mayHaveReplaced();
  }
  throw stale;
}

/** Whether the job writes a `_delta/`: `--reuse --id-field`, and the previous output was usable. */
function hasDelta(record: CorpusJobRecord): boolean {
  return record.options.reuse !== undefined && record.options.idField !== undefined && record.reuseError === null;
}

function countsOf(record: CorpusJobRecord): Manifest['counts'] {
  return {
    lines: record.totalLines ?? 0,
    embedded: record.rowsEmbedded,
    skipped_blank: record.rowsBlank,
    failed: record.rowsFailed,
    truncated: record.rowsTruncated,
    ...(record.options.reuse !== undefined ? { reused: record.rowsReused } : {}),
    ...(hasDelta(record) ? { new: record.rowsNew, changed: record.rowsChanged, unchanged: record.rowsUnchanged, deleted: record.rowsDeleted } : {}),
  };
}

/**
 * Leaves in `_delta/` exactly this run's files: its shards' upserts and `deletes.jsonl`, or nothing
 * when the job has no delta (no `--reuse --id-field`, or reuse failed in some generation, whose
 * files were then relative to no base). Returns the delta for the manifest.
 */
async function settleDelta(record: CorpusJobRecord, shards: ShardStats[], output: { store: ObjectStore; prefix: string }): Promise<Manifest['delta']> {
  const upserts = hasDelta(record) ? shards.flatMap((shard) => (shard.upsertsFile ? [shard.upsertsFile] : [])) : [];
  const keep = new Set(hasDelta(record) ? [...upserts, DELETES_FILE] : []);
  for await (const object of output.store.list(`${output.prefix}${DELTA_FOLDER}/`)) {
    if (!keep.has(object.key.slice(output.prefix.length))) await output.store.delete(object.key);
  }
  if (!hasDelta(record)) return undefined;
  if (!(await output.store.stat(output.prefix + DELETES_FILE))) throw new Error(`${DELETES_FILE} is missing; the split writes it before it finishes`);
  return { upserts, deletes: DELETES_FILE };
}

/**
 * Every shard file must be the one the ledger recorded: one deleted while the job ran (a cleanup,
 * an S3 lifecycle rule, a wiped bucket) or replaced (a stale writer of an earlier generation, as a
 * size that does not match) fails the job at once with STORAGE_ERROR, naming the files, and those
 * shards leave the ledger, so `embedq retry` writes them again. Before, finalize failed the same
 * way 14 times over ~8 minutes as INTERNAL, and a retry, its ledger unchanged, failed again.
 */
async function assertShardFilesInPlace(
  services: Services,
  record: CorpusJobRecord,
  generation: number,
  shards: ShardStats[],
  output: { store: ObjectStore; prefix: string },
): Promise<void> {
  const wrong = await shardFilesOutOfPlace(output, shards);
  if (wrong.length === 0) return;
  // Not forgotten: the job was stopped or retried meanwhile, and this step has nothing to say.
  const forgotten = await services.corpora.ledger.forget(record.id, generation, wrong.map(({ shard }) => shard.shard));
  if (!forgotten) throw new StaleStepError(`job ${record.id} no longer runs in generation ${generation}`);
  const problems = wrong.map(({ shard, found }) => `${shard.file} is ${found === undefined ? 'missing' : `${found} bytes`} (${shard.bytes} bytes were written)`).join(', ');
  throw new StorageError(
    `${problems} in ${record.options.output}: removed or replaced while the job ran (a cleanup, an S3 lifecycle rule, another program writing there). \`embedq retry ${record.id}\` writes ${wrong.length === 1 ? 'that shard' : 'those shards'} again`,
  );
}

/**
 * `fence.before` goes before each write and delete: this step may have been paused past its lock
 * (stepFence); `fence.after` follows the errors file, the manifest and `_SUCCESS`, the files
 * readers trust.
 */
async function writeOutputFiles(
  id: string,
  record: CorpusJobRecord,
  shards: ShardStats[],
  output: { store: ObjectStore; prefix: string },
  /** Redis's clock, for the manifest's finished_at as for started_at: a worker's may be up to 30 s off (EMBEDQ_MAX_CLOCK_SKEW_S). */
  now: () => Promise<number>,
  fence: { before: () => Promise<void>; after: (written: readonly string[]) => Promise<void> },
): Promise<void> {
  // Streamed shard by shard: joined into one string, a run's records past 512 MiB (2.5 million
  // failed lines) failed finalize for good ("Invalid string length"), after holding them all.
  async function* errorRecords(): AsyncGenerator<Uint8Array> {
    for (const shard of shards) {
      if (!shard.errorsKey) continue;
      const { body } = await output.store.open(output.prefix + shard.errorsKey);
      for await (const chunk of body) yield chunk as Uint8Array;
    }
  }
  await fence.before();
  await output.store.writeStream(output.prefix + ERRORS_FILE, errorRecords());
  await fence.after([ERRORS_FILE]);

  const counts = countsOf(record);
  if (counts.embedded + counts.skipped_blank + counts.failed !== counts.lines) {
    // Invariant 1 is broken somewhere; refuse to vouch for the output.
    throw new Error(`counts do not add up: ${JSON.stringify(counts)}`);
  }
  await fence.before();
  const delta = await settleDelta(record, shards, output);
  const manifest = buildManifest({
    jobId: id,
    options: record.options,
    counts,
    tokens: record.tokens,
    shards: shards.map((shard) => ({ file: shard.file, first_row: shard.firstRow, last_row: shard.lastRow, rows: shard.rows, bytes: shard.bytes })),
    ...(record.options.reuse !== undefined ? { reuse: { from: record.reusedFrom?.location ?? null, error: record.reuseError } } : {}),
    ...(delta ? { delta } : {}),
    errorsFile: ERRORS_FILE,
    startedAt: new Date(record.startedAt ?? record.createdAt),
    finishedAt: new Date(await now()),
  });
  await fence.before();
  await output.store.write(output.prefix + MANIFEST_FILE, `${JSON.stringify(manifest, null, 2)}\n`);
  await fence.after([ERRORS_FILE, MANIFEST_FILE]);
  await output.store.write(output.prefix + SUCCESS_FILE, '');
  await fence.after([ERRORS_FILE, MANIFEST_FILE, SUCCESS_FILE]);
}
