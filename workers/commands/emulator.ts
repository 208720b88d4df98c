import { Command, InvalidArgumentError } from 'commander';

import { createLogger } from '../../src/logger.js';
import {
  type EmulatorOptions,
  emulatorOptionsFromEnv,
  type FaultsPatch,
  parseFailRate429,
  parseLatency,
  parseLimit,
  parseNumber,
  parsePort,
  parseProbability,
  parseTokenCounting,
} from '../../src/emulator/emulator-options.js';
import { listenError } from './listen-error.js';

/** The CLI's default port (the library's default is 0, a free port). */
const DEFAULT_PORT = 8089;

/** Flags as commander parses them; undefined means "not given" (env or default applies). */
interface EmulatorFlags {
  port?: number;
  host?: string;
  qpm?: number;
  tpm?: number;
  apiKey?: string;
  latencyMs?: FaultsPatch['latencyMs'];
  failRate429?: FaultsPatch['failRate429'];
  failRate500?: number;
  blockedWord?: string;
  shuffle?: boolean;
  shuffleRate?: number;
  dropRate?: number;
  slowRate?: number;
  slowMs?: number;
  retryAfter?: number;
  tokenCounting?: 'exact' | 'estimate';
  seed?: number;
  vectorCacheMb?: number;
}

/** Wraps a parser so commander prints its message as an invalid-argument error. */
const argument =
  <T>(parse: (value: string) => T) =>
  (value: string): T => {
    try {
      return parse(value);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };

/**
 * `embedq emulator`: runs the local DashScope-compatible server until SIGINT/SIGTERM.
 * Flags override `EMBEDQ_EMULATOR_*` variables, which override the defaults.
 */
export function emulatorCommand(): Command {
  return new Command('emulator')
    .description('run a local DashScope-compatible embedding server (native and OpenAI-compatible endpoints)')
    .option('--port <port>', `TCP port, 0 for a free one (default: ${DEFAULT_PORT}; env EMBEDQ_EMULATOR_PORT)`, argument(parsePort))
    .option('--host <host>', 'interface to listen on (default: 127.0.0.1)')
    .option('--qpm <n>', 'requests per minute per model, also per second at 1/60; 0 = unlimited (default: 6000)', argument(parseLimit))
    .option('--tpm <n>', 'tokens per minute per model, also per second at 1/60; 0 = unlimited (default: 24000000)', argument(parseLimit))
    .option('--api-key <key>', 'accept only this Bearer token (default: any non-empty token)')
    .option('--latency-ms <min,median,p99>', 'response latency: lognormal between min and p99, or one number', argument(parseLatency))
    .option('--fail-rate-429 <p>', 'probability of 429: "p" (requests kind) or "requests=p,tokens=p,burst=p"', argument(parseFailRate429))
    .option('--fail-rate-500 <p>', 'probability of 500 InternalError', argument(parseProbability))
    .option('--blocked-word <word>', 'moderation trigger word, "" disables (default: EMBEDQ_BLOCKED)')
    .option('--shuffle', 'always shuffle the text_index order of responses (same as --shuffle-rate 1)')
    .option('--shuffle-rate <p>', 'probability of a shuffled text_index order', argument(parseProbability))
    .option('--drop-rate <p>', 'probability of destroying the connection instead of answering', argument(parseProbability))
    .option('--slow-rate <p>', 'probability of a slow response (adds --slow-ms)', argument(parseProbability))
    .option('--slow-ms <ms>', 'delay added to slow responses (default: 30000)', argument((value) => parseNumber(value, 0, 600_000)))
    .option('--retry-after <seconds>', 'send Retry-After on 429s (DashScope documents none; default: off)', argument((value) => Math.round(parseNumber(value, 0, 3600))))
    .option('--token-counting <mode>', 'exact (Qwen BPE) or estimate (fast; exact only near the 8,192-token limit)', argument(parseTokenCounting))
    .option('--seed <n>', 'seed of the fault dice, for reproducible runs', argument((value) => parseNumber(value, 0, 2 ** 32)))
    .option('--vector-cache-mb <n>', 'memory for cached per-token vectors (default: 64)', argument((value) => parseNumber(value, 0, 65_536)))
    .action(async (flags: EmulatorFlags) => {
      const logger = createLogger({ level: 'info' });
      const options = mergeOptions(emulatorOptionsFromEnv(process.env), flags);
      // Loaded when run, so the other commands do not carry the emulator.
      const { startEmulator } = await import('../../src/emulator/server.js');
      const emulator = await startEmulator(options).catch((error: unknown) => {
        throw listenError(error, options.host ?? '127.0.0.1', options.port ?? DEFAULT_PORT);
      });
      logger.info(
        {
          url: emulator.url,
          limits: emulator.stats().limits,
          tokenCounting: options.tokenCounting ?? 'exact',
          apiKeyRequired: options.apiKey !== undefined,
          faults: emulator.faults(),
        },
        'emulator listening',
      );
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          logger.info({ signal }, 'emulator stopping');
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      const { requests, accepted, tokens } = emulator.stats();
      await emulator.close();
      logger.info({ requests, accepted, tokens }, 'emulator stopped');
    });
}

/** Flags win over the environment; nested fault objects merge. */
export function mergeOptions(fromEnv: EmulatorOptions, flags: EmulatorFlags): EmulatorOptions {
  const faults: FaultsPatch = { ...fromEnv.faults };
  if (flags.latencyMs) faults.latencyMs = flags.latencyMs;
  if (flags.failRate429) faults.failRate429 = { ...faults.failRate429, ...flags.failRate429 };
  if (flags.failRate500 !== undefined) faults.failRate500 = flags.failRate500;
  if (flags.blockedWord !== undefined) faults.blockedWord = flags.blockedWord;
  if (flags.shuffle) faults.shuffleRate = 1;
  if (flags.shuffleRate !== undefined) faults.shuffleRate = flags.shuffleRate;
  if (flags.dropRate !== undefined) faults.dropRate = flags.dropRate;
  if (flags.slowRate !== undefined) faults.slowRate = flags.slowRate;
  if (flags.slowMs !== undefined) faults.slowMs = flags.slowMs;
  if (flags.retryAfter !== undefined) faults.retryAfterSeconds = flags.retryAfter;
  return {
    port: flags.port ?? fromEnv.port ?? DEFAULT_PORT,
    host: flags.host ?? fromEnv.host,
    apiKey: flags.apiKey ?? fromEnv.apiKey,
    qpm: flags.qpm ?? fromEnv.qpm,
    tpm: flags.tpm ?? fromEnv.tpm,
    tokenCounting: flags.tokenCounting ?? fromEnv.tokenCounting,
    seed: flags.seed ?? fromEnv.seed,
    vectorCacheMb: flags.vectorCacheMb ?? fromEnv.vectorCacheMb,
    faults,
  };
}
