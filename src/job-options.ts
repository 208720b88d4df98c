import path from 'node:path';

import * as z from 'zod';

import { formatIssues } from './config.js';
import type { EmbeddingParameters } from './embedding.js';
import { ConfigError } from './errors.js';
import { APIS, MODEL_NAMES, MODELS, OUTPUT_TYPES, TEXT_TYPES, wantsSparse } from './models.js';
import { isHiddenKey } from './corpus/list-corpus.js';
import { DELTA_FOLDER, TEMP_FOLDER } from './output/layout.js';
import { canonicalLocalPath, parseLocation, type Location } from './storage/locations.js';

/** The output `embedq plan` validates with: it writes nothing. */
export const NO_OUTPUT = '-';

/**
 * A count as a flag gives it (digits) or a stored job holds it (a JSON number). Coerced, `0x10`,
 * `1e3`, `1024.0` and ` 512` passed as numbers other than the ones typed.
 */
const wholeNumber = () =>
  z.preprocess(
    (value) => (typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value),
    z.number({ error: (issue) => `must be a whole number written in digits, not ${JSON.stringify(issue.input)}` }).int({ error: 'must be a whole number' }),
  );

/**
 * The options of one corpus job (DESIGN "Contract": `embedq submit` / `plan` / `schedule add`).
 * They travel with the job in Redis, so every worker embeds the corpus the same way.
 */
const JobOptionFields = z.object({
  input: z.string().min(1, 'input is required'),
  output: z.string().min(1, '--out is required'),
  model: z.enum(MODEL_NAMES, { error: `must be one of ${MODEL_NAMES.join(', ')}` }).default('text-embedding-v4'),
  dimension: wholeNumber().pipe(z.number().positive()).optional(),
  /** Default `dense&sparse`; `dense` with `api: 'openai'`, the one type that endpoint returns. */
  outputType: z.enum(OUTPUT_TYPES, { error: `must be one of ${OUTPUT_TYPES.join(', ')}` }).optional(),
  textType: z.enum(TEXT_TYPES, { error: `must be one of ${TEXT_TYPES.join(', ')}` }).default('document'),
  instruct: z.string().min(1).max(1000).optional(),
  api: z.enum(APIS, { error: `must be one of ${APIS.join(', ')}` }).default('dashscope'),
  shardRows: wholeNumber().pipe(z.number().min(10).max(10_000_000)).default(10_000),
  outputFormat: z.enum(['parquet', 'arrow']).default('parquet'),
  format: z.enum(['text', 'jsonl']).optional(),
  textField: z.string().min(1).default('text'),
  idField: z.string().min(1).optional(),
  longLines: z.enum(['truncate', 'error']).default('truncate'),
  /** `--reuse`: a previous output (or a schedule root, through its `_latest.json`) whose vectors unchanged lines take. */
  reuse: z.string().min(1).optional(),
});

/**
 * Every option's name. Parsing drops other keys (a stored job or schedule of an older version
 * may carry one); a schedules file, written by hand, is checked against these (schedule-file.ts).
 */
export const JOB_OPTION_NAMES: readonly string[] = Object.keys(JobOptionFields.shape);

const JobOptionsSchema = JobOptionFields
  .superRefine((options, context) => {
    for (const field of ['input', 'output', 'reuse'] as const) {
      const value = options[field];
      if (value === undefined) continue;
      try {
        parseLocation(value);
      } catch (error) {
        context.addIssue({ code: 'custom', path: [field], message: (error as Error).message });
      }
    }
    if (options.format === 'text' && options.idField !== undefined) {
      // Every line would have a null id: the delta would classify nothing and list nothing.
      context.addIssue({ code: 'custom', path: ['idField'], message: 'plain-text lines (--format text) have no fields, so no id; --id-field needs JSON Lines input' });
    }
    if (options.format === 'text' && options.textField !== 'text') {
      // The whole line would be embedded: the field named is never read.
      context.addIssue({ code: 'custom', path: ['textField'], message: `plain-text lines (--format text) have no fields: "${options.textField}" would never be read; --text-field needs JSON Lines input` });
    }
    if (options.output !== NO_OUTPUT && outputInsideInput(options.input, options.output)) {
      const hidden = parseLocation(options.input).kind === 'local' ? ' (or a hidden folder in it, such as .vectors/, which reading skips)' : '';
      context.addIssue({
        code: 'custom',
        path: ['output'],
        message: `${options.output} is inside the input ${options.input}: the next run would read this run's files as corpus lines; choose an output outside it${hidden}`,
      });
    }
    if (options.output !== NO_OUTPUT && inOutputsOwnFolder(options.output)) {
      context.addIssue({
        code: 'custom',
        path: ['output'],
        message: `${options.output} is in a folder named ${TEMP_FOLDER} or ${DELTA_FOLDER}, the names an output keeps for its own files: a run into the folder above would remove this one's; choose another name`,
      });
    }
    if (options.reuse !== undefined && sameFolder(options.reuse, options.output)) {
      // The run would replace the very shards it copies its vectors from.
      context.addIssue({ code: 'custom', path: ['reuse'], message: `${options.reuse} is this job's own output; reuse a previous run's output (or a schedule root)` });
    }
    const spec = MODELS[options.model];
    if (options.dimension !== undefined && !spec.dimensions.includes(options.dimension)) {
      context.addIssue({
        code: 'custom',
        path: ['dimension'],
        message: `${options.dimension} is not allowed for ${options.model}; choose one of ${spec.dimensions.join(', ')}`,
      });
    }
    if (options.instruct !== undefined && !spec.supportsInstruct) {
      context.addIssue({ code: 'custom', path: ['instruct'], message: `${options.model} does not take an instruction (text-embedding-v4 only)` });
    }
    if (options.api === 'openai') {
      if (options.outputType !== undefined && wantsSparse(options.outputType)) {
        context.addIssue({
          code: 'custom',
          path: ['outputType'],
          message: `"${options.outputType}" needs the native API; the OpenAI-compatible endpoint returns dense vectors only (use --output-type dense or --api dashscope)`,
        });
      }
      if (options.instruct !== undefined) {
        context.addIssue({ code: 'custom', path: ['instruct'], message: 'the OpenAI-compatible endpoint takes no instruction; use --api dashscope' });
      }
      if (options.textType !== 'document') {
        context.addIssue({ code: 'custom', path: ['textType'], message: 'the OpenAI-compatible endpoint takes no text type; use --api dashscope' });
      }
    }
  })
  .transform((options) => ({
    ...options,
    dimension: options.dimension ?? MODELS[options.model].defaultDimension,
    // Before, `--api openai` without `--output-type dense` was refused: the default asked for sparse.
    outputType: options.outputType ?? (options.api === 'openai' ? ('dense' as const) : ('dense&sparse' as const)),
  }));

export type JobOptions = z.output<typeof JobOptionsSchema>;
export type JobOptionsInput = z.input<typeof JobOptionsSchema>;

/**
 * Validates raw options (CLI flags, a stored schedule); throws one ConfigError listing every
 * problem, each under `name(field)` (Default: the option's own name, as a schedules file has it).
 */
export function parseJobOptions(raw: Record<string, unknown>, name?: (field: string) => string): JobOptions {
  const parsed = JobOptionsSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`Invalid options:\n${formatIssues(parsed.error, name)}`);
  return parsed.data;
}

/**
 * Whether the output's files land where listing the input finds them. A prefix or folder input
 * lists everything under it, so a run into an output inside it would read the previous run's
 * shards, manifest and errors as corpus lines (and its own, written while the listing goes on).
 * A one-object input lists nothing; local listings skip hidden entries.
 */
function outputInsideInput(input: string, output: string): boolean {
  let from: Location;
  let to: Location;
  try {
    from = parseLocation(input);
    to = parseLocation(output);
  } catch {
    return false; // reported above
  }
  if (from.kind === 's3' && to.kind === 's3') {
    if (from.bucket !== to.bucket || (from.key !== '' && !from.key.endsWith('/'))) return false;
    const prefix = to.key === '' || to.key.endsWith('/') ? to.key : `${to.key}/`;
    return prefix.startsWith(from.key);
  }
  if (from.kind === 'local' && to.kind === 'local') {
    const relative = path.relative(canonicalLocalPath(from.path), canonicalLocalPath(to.path));
    if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) return false;
    return !isHiddenKey(relative.split(path.sep).join('/'));
  }
  return false;
}

/** Whether a path segment of the location is `_tmp` or `_delta` (an output's scratch and delta folders), links resolved. */
function inOutputsOwnFolder(output: string): boolean {
  let location: Location;
  try {
    location = parseLocation(output);
  } catch {
    return false; // reported above
  }
  // Local paths with links resolved: a link to `out/_delta` is in it.
  const segments = (location.kind === 's3' ? location.key : canonicalLocalPath(location.path)).split(/[\\/]/);
  return segments.some((segment) => segment === TEMP_FOLDER || segment === DELTA_FOLDER);
}

/** Two locations naming one folder (`s3://b/out` and `s3://b/out/` do, and a local link to a folder and the folder). */
function sameFolder(a: string, b: string): boolean {
  const trim = (location: string): string => (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) ? location : canonicalLocalPath(location)).replace(/\/+$/, '');
  return trim(a) === trim(b);
}

export function embeddingParameters(options: JobOptions): EmbeddingParameters {
  return {
    model: options.model,
    dimension: options.dimension,
    outputType: options.outputType,
    textType: options.textType,
    instruct: options.instruct,
    api: options.api,
  };
}
