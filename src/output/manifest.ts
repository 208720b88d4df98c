import type { JobOptions } from '../job-options.js';
import { MODELS } from '../models.js';

/** `_manifest.json`: what a job read, how it embedded it, what it wrote. snake_case like DashScope's own JSON. */
export interface Manifest {
  job_id: string;
  input: string;
  output: string;
  model: string;
  dimension: number;
  output_type: string;
  text_type: string;
  instruct: string | null;
  api: string;
  output_format: string;
  counts: {
    /** Every input line, blank ones included: lines = embedded + skipped_blank + failed. */
    lines: number;
    embedded: number;
    skipped_blank: number;
    failed: number;
    /** Embedded lines cut to the model's 8,192-token limit (`--long-lines truncate`). */
    truncated: number;
    /** `--reuse`: embedded lines whose vectors were copied from the previous output (no request). */
    reused?: number;
    /** `--reuse --id-field` (when reuse worked): ids new, with changed text, unchanged, and gone. */
    new?: number;
    changed?: number;
    unchanged?: number;
    deleted?: number;
  };
  /** `--reuse`: the previous output the job built on (a schedule root resolved to its last good run), or null. */
  reused_from?: string | null;
  /** `--reuse`: why the previous output could not be used (every line was then embedded), or null. */
  reuse_error?: string | null;
  /** Tokens sent to DashScope (reused lines cost none). */
  tokens: number;
  estimated_cost_usd: number;
  shards: Array<{ file: string; first_row: number; last_row: number; rows: number; bytes: number }>;
  /** `--reuse --id-field` (when reuse worked): the delta's files, relative to the output. */
  delta?: { upserts: string[]; deletes: string };
  errors_file: string;
  started_at: string;
  finished_at: string;
}

export interface ManifestInput {
  jobId: string;
  options: JobOptions;
  counts: Manifest['counts'];
  tokens: number;
  shards: Manifest['shards'];
  reuse?: { from: string | null; error: string | null };
  delta?: Manifest['delta'];
  errorsFile: string;
  startedAt: Date;
  finishedAt: Date;
}

/** Rounded to a millionth of a dollar: at four places, a run under ~700 tokens (a small incremental run) cost 0. */
export function estimateCostUsd(model: JobOptions['model'], tokens: number): number {
  return Math.round(tokens * MODELS[model].usdPerMillionTokens) / 1e6;
}

export function buildManifest(input: ManifestInput): Manifest {
  const { options } = input;
  return {
    job_id: input.jobId,
    input: options.input,
    output: options.output,
    model: options.model,
    dimension: options.dimension,
    output_type: options.outputType,
    text_type: options.textType,
    instruct: options.instruct ?? null,
    api: options.api,
    output_format: options.outputFormat,
    counts: input.counts,
    ...(input.reuse ? { reused_from: input.reuse.from, reuse_error: input.reuse.error } : {}),
    tokens: input.tokens,
    estimated_cost_usd: estimateCostUsd(options.model, input.tokens),
    shards: input.shards,
    ...(input.delta ? { delta: input.delta } : {}),
    errors_file: input.errorsFile,
    started_at: input.startedAt.toISOString(),
    finished_at: input.finishedAt.toISOString(),
  };
}
