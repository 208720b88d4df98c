import { formatCount } from '../format-count.js';
import type { JobOptions } from '../job-options.js';
import { MODELS, textTokenLimit } from '../models.js';
import { estimateCostUsd } from '../output/manifest.js';
import type { S3ClientSource } from '../storage/s3-store.js';
import { estimateTokens, loadTokenizer, mayExceedTokens } from '../tokens/count-tokens.js';
import { fitToTokenLimit } from '../tokens/fit-tokens.js';
import { placeLine, type BatchSlot } from './batching.js';
import { listCorpus } from './list-corpus.js';
import { readAhead } from './read-ahead.js';
import { formatOf, plainTextWarning, readCorpusLines } from './read-lines.js';
import { UnreadableInput } from './unreadable-input.js';

export interface CorpusPlan {
  objects: number;
  lines: number;
  blank: number;
  invalid: number;
  /** Lines over the model's token limit: truncated, or with `--long-lines error` recorded as errors and not in `requests` or `tokens`. */
  tooLong: number;
  /** With `--reuse`: lines whose vectors the previous output has (not sent, not in requests or tokens). */
  reused: number;
  requests: number;
  tokens: number;
  /**
   * Whether `tokens` is an exact Qwen BPE count, or an estimate: exact for lines that may be over
   * the limit, the cheap estimate for the rest (over by ~1.1–1.5× on prose, under on digit runs).
   */
  exactTokens: boolean;
  estimatedCostUsd: number;
  /** Minutes at the account's limits (whichever of QPM and TPM binds). */
  minutesAtQuota: number;
  /**
   * About how many bytes of Redis this job's queued lines take at most: the text of the
   * `maxOpenShards` consecutive shards that hold the most (the split waits for room beyond them),
   * as BullMQ job data. Its buffered vectors come on top.
   */
  queuedTextBytes: number;
  /** What the run would do that the options do not say (JSON Lines fields asked of plain text, a failure for no readable line, a large Redis). */
  warnings: string[];
}

/** Beyond this, `plan` warns about the Redis a job's queued lines need (the vectors at the defaults take ~120 MB). */
const QUEUED_TEXT_WARNING_BYTES = 128 * 1024 * 1024;

/**
 * A queued line as Redis keeps it: its text with its row, source and hash in the embed job's data
 * (~200 bytes), and a quarter on top for the allocator's size classes. Measured: 10 lines of 7,900
 * bytes, 80.5 KB of data, 99 KB by MEMORY USAGE.
 */
const queuedLineBytes = (text: string): number => Math.ceil((Buffer.byteLength(text) + 200) * 1.25);

/** The most text any `maxOpenShards` consecutive shards hold: what the split lets Redis keep queued at once. */
class OpenShardsText {
  private readonly window: number[] = [];
  private shard = -1;
  peak = 0;

  constructor(
    private readonly shardRows: number,
    private readonly maxOpenShards: number,
  ) {}

  add(row: number, bytes: number): void {
    for (const shard = Math.floor(row / this.shardRows); this.shard < shard; this.shard += 1) {
      this.window.push(0);
      if (this.window.length > this.maxOpenShards) this.window.shift();
    }
    this.window[this.window.length - 1]! += bytes;
    this.peak = Math.max(this.peak, this.window.reduce((sum, shardBytes) => sum + shardBytes, 0));
  }
}

/**
 * `embedq plan`: a dry run over the corpus. Counts lines as the producer will (blank, invalid,
 * batches of 10 that never cross a shard), and tokens exactly or by estimate.
 */
export async function planCorpus(
  options: JobOptions,
  limits: { requestsPerMinute: number; tokensPerMinute: number },
  deps: {
    s3Client?: S3ClientSource | undefined;
    exactTokens?: boolean;
    /** `--reuse`: whether the previous output has this line (its text as it would be embedded). */
    reusable?: ((source: string, line: number, text: string) => boolean) | undefined;
    /** EMBEDQ_MAX_OPEN_SHARDS of the workers (Default: 2). */
    maxOpenShards?: number;
  },
): Promise<CorpusPlan> {
  const spec = MODELS[options.model];
  const tokenLimit = textTokenLimit(options.model);
  const tokenizer = deps.exactTokens ? await loadTokenizer() : undefined;
  const plan = { objects: 0, lines: 0, blank: 0, invalid: 0, tooLong: 0, reused: 0, requests: 0, tokens: 0 };
  let jsonLinesObjects = 0;
  let slot: BatchSlot | undefined;
  const readable = new UnreadableInput(options.textField);
  const maxOpenShards = deps.maxOpenShards ?? 2;
  const queued = new OpenShardsText(options.shardRows, maxOpenShards);
  const batching = { shardRows: options.shardRows, maxTextsPerRequest: spec.maxTextsPerRequest };
  for await (const object of readAhead(listCorpus(options.input, { s3Client: deps.s3Client }))) {
    plan.objects += 1;
    if ((options.format ?? formatOf(object.key)) === 'jsonl') jsonLinesObjects += 1;
    for await (const line of readCorpusLines(object, { format: options.format, textField: options.textField, idField: options.idField })) {
      const row = plan.lines;
      plan.lines += 1;
      if (line.kind === 'blank') plan.blank += 1;
      else if (line.kind === 'error') {
        plan.invalid += 1;
        readable.refused(line);
      } else {
        readable.readable();
        let tokens = tokenizer ? tokenizer.countTokens(line.text) : estimateTokens(line.text);
        let text = line.text;
        // Over the limit as the run decides it (workers/split-corpus.ts): only a line with more
        // UTF-8 bytes than the limit can be, and only such a line is counted exactly. The estimate
        // alone under-counts digit runs, and missed lines the run truncated.
        if (mayExceedTokens(line.text, tokenLimit)) {
          const fit = fitToTokenLimit(await loadTokenizer(), line.text, tokenLimit);
          if (fit.exceeded) plan.tooLong += 1;
          // `--long-lines error`: the run records it as TEXT_TOO_LONG and sends nothing (it was
          // counted as truncated, with its tokens and a batch slot).
          if (fit.exceeded && options.longLines === 'error') continue;
          tokens = fit.exceeded ? tokenLimit : fit.tokens;
          text = fit.text;
        }
        // The run matches the text it would embed: cut to the limit when it is over.
        if (deps.reusable?.(line.source, line.line, text)) {
          plan.reused += 1;
          continue;
        }
        // As the service bills them: v4 adds an end token to every text (models.ts). The plan's
        // exact count was 1 a line under the run's on v4 (4% of a corpus of short lines).
        plan.tokens += tokens + MODELS[options.model].tokensAddedPerText;
        queued.add(row, queuedLineBytes(text));
        slot = placeLine(slot, row, batching);
        if (slot.position === 0) plan.requests += 1;
      }
    }
  }
  const minutesAtQuota = Math.max(plan.requests / limits.requestsPerMinute, plan.tokens / limits.tokensPerMinute);
  const plainText = plan.objects > 0 && jsonLinesObjects === 0 ? plainTextWarning(options) : undefined;
  // The run fails when no line can be read: say so here, where it costs nothing.
  const unreadable = readable.problem(true);
  const warnings = [...(plainText === undefined ? [] : [plainText]), ...(unreadable ? [`the run will fail with ${unreadable.code}: ${unreadable.message}`] : [])];
  if (queued.peak > QUEUED_TEXT_WARNING_BYTES) {
    const megabytes = (bytes: number): string => `${formatCount(bytes / 1024 / 1024)} MB`;
    warnings.push(
      `the job's queued lines will take up to ~${megabytes(queued.peak)} of Redis (the text of ${maxOpenShards} shards of ${formatCount(options.shardRows)} lines, EMBEDQ_MAX_OPEN_SHARDS × --shard-rows), besides its vectors; lower --shard-rows for a smaller Redis`,
    );
  }
  return { ...plan, exactTokens: tokenizer !== undefined, estimatedCostUsd: estimateCostUsd(options.model, plan.tokens), minutesAtQuota, queuedTextBytes: queued.peak, warnings };
}
