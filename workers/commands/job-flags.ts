import path from 'node:path';

import { Option, type Command } from 'commander';

import { formatCount } from '../../src/format-count.js';
import { NO_OUTPUT, parseJobOptions, type JobOptions } from '../../src/job-options.js';
import { APIS, MODEL_NAMES, MODELS, OUTPUT_TYPES, TEXT_TYPES, textTokenLimit } from '../../src/models.js';

/** The options shared by `submit`, `plan` and `schedule add` (DESIGN "Contract"). */
export function addJobFlags(command: Command, { requireOut }: { requireOut: boolean }): Command {
  const out = new Option('-o, --out <output>', 'output: s3://bucket/prefix/ or a local folder');
  if (requireOut) out.makeOptionMandatory();
  return command
    .addOption(out)
    .addOption(new Option('--model <model>', 'embedding model').choices(MODEL_NAMES).default('text-embedding-v4'))
    .option('--dimension <n>', `dense dimension (default 1024; ${MODEL_NAMES.map((model) => `${model.replace('text-embedding-', '')}: ${MODELS[model].dimensions.join('/')}`).join(', ')})`)
    .addOption(new Option('--output-type <type>', 'vectors to keep (default: "dense&sparse"; "dense" with --api openai)').choices(OUTPUT_TYPES))
    .addOption(new Option('--text-type <type>', 'document or query').choices(TEXT_TYPES).default('document'))
    .option('--instruct <text>', 'task instruction (text-embedding-v4, native API)')
    .addOption(new Option('--api <api>', 'native DashScope API or the OpenAI-compatible one (dense only)').choices(APIS).default('dashscope'))
    .option('--shard-rows <n>', 'input rows per output shard (10 to 10,000,000)', '10000')
    .addOption(new Option('--output-format <format>', 'shard file format').choices(['parquet', 'arrow']).default('parquet'))
    .addOption(new Option('--format <format>', 'input format (default: by extension)').choices(['text', 'jsonl']))
    .option('--text-field <field>', 'JSON Lines field holding the text (dotted paths allowed)', 'text')
    .option('--id-field <field>', 'JSON Lines field holding an id to carry into the output')
    .addOption(
      new Option('--long-lines <mode>', `lines over the model's token limit (${MODEL_NAMES.map((model) => `${model.replace('text-embedding-', '')}: ${formatCount(textTokenLimit(model))}`).join(', ')}): truncate them, or record errors`)
        .choices(['truncate', 'error'])
        .default('truncate'),
    );
}

/**
 * Commander's camelCase flags → validated JobOptions (every problem reported at once). Local
 * paths become absolute: the workers that read and write them need not share this shell's folder.
 */
export function jobOptionsFromFlags(input: string, flags: Record<string, unknown>): JobOptions {
  const absolute = (location: string): string => (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) || location === '' ? location : path.resolve(location));
  return parseJobOptions({
    input: absolute(input),
    output: typeof flags.out === 'string' ? absolute(flags.out) : NO_OUTPUT,
    model: flags.model,
    dimension: flags.dimension,
    outputType: flags.outputType,
    textType: flags.textType,
    instruct: flags.instruct,
    api: flags.api,
    shardRows: flags.shardRows,
    outputFormat: flags.outputFormat,
    format: flags.format,
    textField: flags.textField,
    idField: flags.idField,
    longLines: flags.longLines,
    reuse: typeof flags.reuse === 'string' ? absolute(flags.reuse) : undefined,
  }, flagName);
}

/** A problem named as the user typed it: `--shard-rows`, not `shardRows`. */
function flagName(field: string): string {
  if (field === 'input') return '<input>';
  if (field === 'output') return '--out';
  return `--${field.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}
