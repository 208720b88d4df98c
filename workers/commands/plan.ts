import type { Command } from 'commander';

import { loadSettings } from '../../src/config.js';
import { planCorpus } from '../../src/corpus/plan-corpus.js';
import { formatCount as n } from '../../src/format-count.js';
import { MODELS, textTokenLimit } from '../../src/models.js';
import { loadS3Client } from '../../src/storage/s3-store.js';
import { addJobFlags, jobOptionsFromFlags } from './job-flags.js';

export function registerPlanCommand(program: Command): void {
  addJobFlags(
    program
      .command('plan <input>')
      .description('dry run: lines, requests, tokens, estimated cost and time at quota')
      .option('--exact', 'count every line with the Qwen tokenizer (slower) instead of the quick estimate; lines that may be over the limit are counted exactly either way')
      .option('--reuse <previous-output>', 'count only what an incremental run would send: lines the previous output (or schedule root) lacks')
      .option('--json', 'print JSON'),
    { requireOut: false },
  ).action(async (input: string, flags: Record<string, unknown>) => {
    const options = jobOptionsFromFlags(input, flags);
    const settings = loadSettings(process.env, { requireApiKey: false });
    const s3Client = input.startsWith('s3://') ? loadS3Client(settings.s3) : undefined;
    let gateError = false;
    try {
      const ownLimits = {
        requestsPerMinute: settings.dashscope.requestsPerMinute ?? MODELS[options.model].defaultRequestsPerMinute,
        tokensPerMinute: settings.dashscope.tokensPerMinute ?? MODELS[options.model].defaultTokensPerMinute,
      };
      // The gate paces at the limit times the target utilisation, less the reserve: so does the plan
      // (it timed a run at the whole limit, half the time a 0.5 reserve gives).
      const share = settings.dashscope.targetUtilization * (1 - settings.dashscope.reserve);
      const ownPaced = { requestsPerMinute: ownLimits.requestsPerMinute * share, tokensPerMinute: ownLimits.tokensPerMinute * share };
      // Under a limit the gate learned, the run is timed at the gate's rates in force instead. Its
      // reader (BullMQ, ioredis) is loaded only where a Redis is named: see plan-learned.ts.
      const gate = process.env.REDIS_URL || process.env.REDIS_CLUSTER_NODES ? await (await import('./plan-learned.js')).readLearnedGate(options.model) : {};
      gateError = gate.error !== undefined;
      const { limits, paced } = gate.learned ?? { limits: ownLimits, paced: ownPaced };
      // The previous output's reader (hyparquet) is loaded only for `--reuse`, and by no other command.
      const reuse = options.reuse === undefined ? undefined : await (await import('./plan-reuse.js')).openReuse(options, settings);
      const plan = await planCorpus(options, paced, { s3Client, exactTokens: flags.exact === true, reusable: reuse?.reusable, maxOpenShards: settings.worker.maxOpenShards });
      if (flags.json) {
        const reuseFields = reuse ? { reused_from: reuse.from ?? null, reuse_error: reuse.error ?? null } : {};
        const learnedFields = {
          learned: gate.learned ? { ...gate.learned.json, fleetProblem: gate.learned.fleetProblem ?? null } : null,
          ...(gate.error === undefined ? {} : { learned_error: gate.error }),
        };
        process.stdout.write(`${JSON.stringify({ ...plan, ...reuseFields, limits, paced, ...learnedFields }, null, 2)}\n`);
        return;
      }
      // 0.07 × 100 is 7.000000000000001 in binary floating point.
      const percent = (fraction: number): string => `${Number((fraction * 100).toFixed(2))}%`;
      const duration = (minutes: number): string => (minutes < 1 ? `${Math.ceil(minutes * 60)} s` : `${minutes.toFixed(1)} min`);
      process.stdout.write(
        [
          `input      ${input} (${n(plan.objects)} ${plan.objects === 1 ? 'object' : 'objects'})`,
          `lines      ${n(plan.lines)} (${n(plan.blank)} blank, ${n(plan.invalid)} invalid, ${n(plan.tooLong)} over ${n(textTokenLimit(options.model))} tokens)`,
          ...(reuse
            ? [reuse.error ? `reuse      unavailable, every line would be sent: ${reuse.error}` : `reuse      ${n(plan.reused)} lines from ${reuse.from} (not sent; requests, tokens, cost and time below are for the rest)`]
            : []),
          `requests   ${n(plan.requests)} of at most ${MODELS[options.model].maxTextsPerRequest} lines`,
          `tokens     ${plan.exactTokens ? '' : '~'}${n(plan.tokens)}${plan.exactTokens ? ' (exact, as billed)' : ' (estimate: over on prose, under on digit runs; --exact to count)'}`,
          `cost       ~$${plan.estimatedCostUsd.toFixed(plan.estimatedCostUsd < 0.01 ? 6 : 4)} at $${MODELS[options.model].usdPerMillionTokens}/M tokens (${options.model})`,
          `time       ~${duration(plan.minutesAtQuota)} at ${n(Math.floor(paced.requestsPerMinute))} QPM / ${n(Math.floor(paced.tokensPerMinute))} TPM${
            gate.learned
              ? `, ${gate.learned.description}`
              : ` (${n(limits.requestsPerMinute)} / ${n(limits.tokensPerMinute)}${settings.dashscope.reserve > 0 ? `, ${percent(settings.dashscope.reserve)} reserved` : ''}, the gate aims at ${percent(settings.dashscope.targetUtilization)})`
          }`,
          ...(gate.learned?.fleetProblem === undefined ? [] : [`fleet      ${gate.learned.fleetProblem}`]),
          ...plan.warnings.map((warning) => `warning    ${warning}`),
          ...(gate.error === undefined ? [] : [`warning    learned limit not read, the time is at the configured limit: ${gate.error}`]),
        ].join('\n') + '\n',
      );
    } finally {
      (await s3Client)?.destroy();
      // A Redis that could not be read leaves ioredis a 2 s timer on its failed socket: exit as
      // the CLI does after a failure, once the output has had a moment to drain.
      if (gateError) setTimeout(() => process.exit(), 500).unref();
    }
  });
}
