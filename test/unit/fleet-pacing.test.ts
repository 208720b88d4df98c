import { describe, expect, it } from 'vitest';

import { modelLimit, pacingDisagreement, pacingOf, sharedPacing, type WorkerPacing } from '../../src/rate/fleet-pacing.js';

const base: WorkerPacing = { baseUrl: 'https://dashscope-intl.aliyuncs.com', requestsPerMinute: 1200, tokensPerMinute: 24_000_000, reserve: 0, targetUtilization: 0.99 };

describe('what workers pace their requests by', () => {
  it('agrees when every worker has the same settings, and leaves out workers that publish none (older versions)', () => {
    expect(pacingDisagreement([{ id: 'a:1', pacing: base }, { id: 'b:2', pacing: { ...base } }, { id: 'old:3' }])).toBeUndefined();
    expect(pacingDisagreement([])).toBeUndefined();
  });

  it('names each setting that differs, its values and who has each', () => {
    const problem = pacingDisagreement([
      { id: 'a:1', pacing: base },
      { id: 'b:2', pacing: { ...base, requestsPerMinute: 6000, reserve: 0.2 } },
      { id: 'c:3', pacing: base },
    ]);
    expect(problem).toBe(
      'workers pace by different settings: EMBEDQ_QPM 1200 (a:1, c:3) vs 6000 (b:2); EMBEDQ_RESERVE 0 (a:1, c:3) vs 0.2 (b:2). ' +
        'Each paces by its own, so together they may overrun the quota or leave part of it unused: give every worker the same settings',
    );
  });

  it('publishes an unset limit as the value it means (a worker setting the default value agrees with one setting nothing)', () => {
    const unset = pacingOf({ baseUrl: 'https://dashscope-intl.aliyuncs.com', requestsPerMinute: undefined, tokensPerMinute: undefined, reserve: 0, targetUtilization: 0.99 });
    const set = pacingOf({ baseUrl: 'https://dashscope-intl.aliyuncs.com', requestsPerMinute: 6000, tokensPerMinute: 24_000_000, reserve: 0, targetUtilization: 0.99 });
    expect(unset).toEqual(set);
    expect(pacingDisagreement([{ id: 'a:1', pacing: unset }, { id: 'b:2', pacing: set }])).toBeUndefined();
  });

  it('publishes the base URL without credentials or path', () => {
    const pacing = pacingOf({ baseUrl: 'https://user:secret@proxy.example.com:8443/dashscope', requestsPerMinute: 1200, tokensPerMinute: 5_000_000, reserve: 0.1, targetUtilization: 0.99 });
    expect(pacing).toEqual({ baseUrl: 'https://proxy.example.com:8443', requestsPerMinute: 1200, tokensPerMinute: 5_000_000, reserve: 0.1, targetUtilization: 0.99 });
  });

  it('gives the settings the live workers share (status and the dashboard read the gate with them), none when they differ or publish none', () => {
    expect(sharedPacing([{ id: 'old:3' }, { id: 'a:1', pacing: base }, { id: 'b:2', pacing: { ...base } }])).toEqual(base);
    expect(sharedPacing([{ id: 'a:1', pacing: base }, { id: 'b:2', pacing: { ...base, reserve: 0.2 } }])).toBeUndefined();
    expect(sharedPacing([{ id: 'old:3' }])).toBeUndefined();
    expect(sharedPacing([])).toBeUndefined();
  });

  it("reads a model's ceiling from a pacing field: the value all share, or its own of model=value", () => {
    expect(modelLimit(1200, 'text-embedding-v3')).toBe(1200);
    expect(modelLimit('text-embedding-v4=1200,text-embedding-v3=1800', 'text-embedding-v3')).toBe(1800);
    expect(modelLimit('text-embedding-v4=1200', 'text-embedding-v3')).toBeUndefined();
    expect(modelLimit('text-embedding-v3=abc', 'text-embedding-v3')).toBeUndefined();
  });
});
