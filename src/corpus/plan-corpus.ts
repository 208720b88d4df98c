import type { S3Client } from '@aws-sdk/client-s3';

import type { JobOptions } from '../job-options.js';
import { MODELS, textTokenLimit } from '../models.js';
import { estimateCostUsd } from '../output/manifest.js';
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
  /** What the run would do that the options do not say (JSON Lines fields asked of plain text, a failure for no readable line). */
  warnings: string[];
}

/**
 * `embedq plan`: a dry run over the corpus. Counts lines as the producer will (blank, invalid,
 * batches of 10 that never cross a shard), and tokens exactly or by estimate.
 */
export async function planCorpus(
  options: JobOptions,
  limits: { requestsPerMinute: number; tokensPerMinute: number },
  deps: {
    s3Client?: S3Client | undefined;
    exactTokens?: boolean;
    /** `--reuse`: whether the previous output has this line (its text as it would be embedded). */
    reusable?: ((source: string, line: number, text: string) => boolean) | undefined;
  },
): Promise<CorpusPlan> {
  const spec = MODELS[options.model];
  const tokenLimit = textTokenLimit(options.model);
  const tokenizer = deps.exactTokens ? await loadTokenizer() : undefined;
  const plan = { objects: 0, lines: 0, blank: 0, invalid: 0, tooLong: 0, reused: 0, requests: 0, tokens: 0 };
  let jsonLinesObjects = 0;
  let slot: BatchSlot | undefined;
  const readable = new UnreadableInput(options.textField);
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
        plan.tokens += tokens;
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
  return { ...plan, exactTokens: tokenizer !== undefined, estimatedCostUsd: estimateCostUsd(options.model, plan.tokens), minutesAtQuota, warnings };
}
