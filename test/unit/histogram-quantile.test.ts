import { describe, expect, it } from 'vitest';

import { histogramQuantile } from '../../bench/processes.js';

describe("histogramQuantile (the bench's latency from the workers' histogram)", () => {
  // Cumulative counts, as Prometheus and the workers' metrics hash keep them, in any order.
  const buckets = [
    { le: Infinity, count: 100 },
    { le: 0.1, count: 0 },
    { le: 0.2, count: 40 },
    { le: 0.3, count: 90 },
    { le: 0.5, count: 99 },
    { le: 1, count: 100 },
  ];

  it('interpolates linearly within the bucket the rank falls in, as histogram_quantile does', () => {
    expect(histogramQuantile(buckets, 0.5)).toBeCloseTo(0.22, 10);
    expect(histogramQuantile(buckets, 0.99)).toBeCloseTo(0.5, 10);
    expect(histogramQuantile(buckets, 0.999)).toBeCloseTo(0.95, 10);
    expect(histogramQuantile(buckets, 0.2)).toBeCloseTo(0.15, 10);
  });

  it('gives the highest finite bound for a quantile past it, and NaN for an empty histogram', () => {
    expect(histogramQuantile([{ le: 0.1, count: 0 }, { le: Infinity, count: 5 }], 0.5)).toBe(0.1);
    expect(histogramQuantile([{ le: 0.1, count: 0 }, { le: Infinity, count: 0 }], 0.5)).toBeNaN();
  });
});
