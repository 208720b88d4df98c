import { describe, expect, it } from 'vitest';

import { mergeOptions } from '../../workers/commands/emulator.js';
import { DEFAULT_FAULTS, emulatorOptionsFromEnv, mergeFaults } from '../../src/emulator/emulator-options.js';
import { ConfigError } from '../../src/errors.js';

describe('emulatorOptionsFromEnv', () => {
  it('reads every EMBEDQ_EMULATOR_* variable', () => {
    const options = emulatorOptionsFromEnv({
      EMBEDQ_EMULATOR_PORT: '9000',
      EMBEDQ_EMULATOR_HOST: '0.0.0.0',
      EMBEDQ_EMULATOR_API_KEY: 'sk-k',
      EMBEDQ_EMULATOR_QPM: '600',
      EMBEDQ_EMULATOR_TPM: 'unlimited',
      EMBEDQ_EMULATOR_TOKEN_COUNTING: 'estimate',
      EMBEDQ_EMULATOR_SEED: '42',
      EMBEDQ_EMULATOR_VECTOR_CACHE_MB: '8',
      EMBEDQ_EMULATOR_LATENCY_MS: '10,50,200',
      EMBEDQ_EMULATOR_FAIL_RATE_429: 'tokens=0.1,burst=0.2',
      EMBEDQ_EMULATOR_FAIL_RATE_500: '0.05',
      EMBEDQ_EMULATOR_BLOCKED_WORD: 'BAD',
      EMBEDQ_EMULATOR_SHUFFLE_RATE: '1',
      EMBEDQ_EMULATOR_DROP_RATE: '0.01',
      EMBEDQ_EMULATOR_SLOW_RATE: '0.02',
      EMBEDQ_EMULATOR_SLOW_MS: '5000',
      EMBEDQ_EMULATOR_RETRY_AFTER_S: '3',
    });
    expect(options).toEqual({
      port: 9000,
      host: '0.0.0.0',
      apiKey: 'sk-k',
      qpm: 600,
      tpm: Infinity,
      tokenCounting: 'estimate',
      seed: 42,
      vectorCacheMb: 8,
      faults: {
        latencyMs: { min: 10, median: 50, p99: 200 },
        failRate429: { tokens: 0.1, burst: 0.2 },
        failRate500: 0.05,
        blockedWord: 'BAD',
        shuffleRate: 1,
        dropRate: 0.01,
        slowRate: 0.02,
        slowMs: 5000,
        retryAfterSeconds: 3,
      },
    });
  });

  it('lists every bad variable at once', () => {
    const run = () => emulatorOptionsFromEnv({ EMBEDQ_EMULATOR_QPM: 'many', EMBEDQ_EMULATOR_FAIL_RATE_500: '2', EMBEDQ_EMULATOR_LATENCY_MS: '9,5,1' });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(/QPM[\s\S]*LATENCY_MS[\s\S]*FAIL_RATE_500/);
  });
});

describe('mergeOptions', () => {
  it('lets flags win over the environment and merges 429 kinds', () => {
    const merged = mergeOptions(emulatorOptionsFromEnv({ EMBEDQ_EMULATOR_QPM: '600', EMBEDQ_EMULATOR_FAIL_RATE_429: '0.1' }), {
      qpm: 60,
      failRate429: { burst: 0.5 },
      shuffle: true,
    });
    expect(merged.qpm).toBe(60);
    expect(merged.port).toBe(8089);
    expect(merged.faults).toEqual({ failRate429: { requests: 0.1, burst: 0.5 }, shuffleRate: 1 });
  });
});

describe('mergeFaults', () => {
  it('merges nested objects and validates', () => {
    const faults = mergeFaults(structuredClone(DEFAULT_FAULTS), { failRate429: { tokens: 0.5 }, latencyMs: { p99: 100 } });
    expect(faults.failRate429).toEqual({ requests: 0, tokens: 0.5, burst: 0 });
    expect(faults.latencyMs).toEqual({ min: 0, median: 0, p99: 100 });
    expect(() => mergeFaults(faults, { failRate500: 1.5 })).toThrow(ConfigError);
    expect(() => mergeFaults(faults, { nonsense: 1 })).toThrow(ConfigError);
    expect(() => mergeFaults(faults, { latencyMs: { min: 200 } })).toThrow('need min ≤ median ≤ p99');
  });
});
