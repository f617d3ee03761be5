import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/telemetry/metrics.js';

async function delayQuantiles(m: Metrics): Promise<Map<string, number>> {
  const metric = await m.registry.getSingleMetric('edge_scorer_event_loop_delay_seconds')!.get();
  return new Map(metric.values.map((v) => [String(v.labels.stat), v.value]));
}

describe('edge_scorer_event_loop_delay_seconds', () => {
  it('reads the delay without the 10 ms sampling interval, and a blocked loop as its block', async () => {
    const m = new Metrics();
    await sleep(300);
    const idle = await delayQuantiles(m);
    expect(idle.get('p50')).toBeLessThan(0.005);
    expect(idle.get('p99')).toBeLessThan(idle.get('max')! + 1e-9);

    await sleep(50);
    const until = Date.now() + 80;
    while (Date.now() < until) {
      // the loop is blocked
    }
    await sleep(50);
    const blocked = await delayQuantiles(m);
    expect(blocked.get('max')).toBeGreaterThanOrEqual(0.06);
    expect(blocked.get('max')).toBeLessThan(0.5);
  });
});
