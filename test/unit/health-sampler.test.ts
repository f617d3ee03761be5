import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { HealthSampler, quantileBetween } from '../../src/console/health-sampler.js';
import { Metrics } from '../../src/telemetry/metrics.js';

describe('console health figures', () => {
  it('takes quantiles of the observations between two cumulative histograms, as histogram_quantile does', () => {
    const before = new Map([
      [0.01, 10],
      [0.1, 10],
      [1, 10],
      [Infinity, 10],
    ]);
    // 100 new observations: 50 under 10 ms, 40 between 10 and 100 ms, 10 between 0.1 and 1 s.
    const after = new Map([
      [0.01, 60],
      [0.1, 100],
      [1, 110],
      [Infinity, 110],
    ]);
    expect(quantileBetween(before, after, 0.5)).toBeCloseTo(0.01, 6);
    expect(quantileBetween(before, after, 0.7)).toBeCloseTo(0.01 + 0.09 * (20 / 40), 6);
    expect(quantileBetween(before, after, 0.99)).toBeCloseTo(0.1 + 0.9 * (9 / 10), 6);
    expect(quantileBetween(after, after, 0.5)).toBeNull();
  });

  it('samples frames/s, defect rate, latency and 429s from the metrics registry', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const sampler = new HealthSampler({
      metrics,
      logger: pino({ level: 'silent' }),
      intervalMs: 1000,
      keep: 3,
    });
    await sampler.sample();
    for (let i = 0; i < 8; i++) metrics.frames.inc({ defect: i < 2 ? 'true' : 'false' });
    metrics.queueRejections.inc(3);
    for (let i = 0; i < 8; i++) metrics.requestDuration.observe({ route: '/v1/score' }, 0.004);
    metrics.requestDuration.observe({ route: '/metrics' }, 5);
    await new Promise((r) => setTimeout(r, 50));
    await sampler.sample();
    const [s] = sampler.history;
    expect(sampler.history).toHaveLength(1);
    expect(s!.defectRate).toBeCloseTo(0.25, 6);
    expect(s!.framesPerSec).toBeGreaterThan(8);
    expect(s!.rejectedPerSec).toBeGreaterThan(3);
    // Only the scoring routes count: the 5 s /metrics request is not the p99.
    expect(s!.p99Ms).toBeLessThanOrEqual(5);
    expect(s!.p50Ms).toBeGreaterThan(0);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 5));
      await sampler.sample();
    }
    expect(sampler.history).toHaveLength(3);
  });
});
