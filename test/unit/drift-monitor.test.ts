import { pino } from 'pino';
import { Registry } from 'prom-client';
import { expect, it } from 'vitest';
import { DriftMonitor, type DriftReport } from '../../src/drift/monitor.js';

it('reports a settings change at once, even when the drift state stays the same', () => {
  const reports: DriftReport[] = [];
  const monitor = new DriftMonitor({
    registry: new Registry(),
    logger: pino({ level: 'silent' }),
    model: () => ({ name: 'm', version: '1', sha256: 'a'.repeat(64), reference: undefined }),
    onReport: (r) => reports.push(r),
  });
  monitor.setSettings(undefined);
  monitor.setSettings({ windowFrames: 50, psiThreshold: 0.5 });
  expect(reports.at(-1)).toMatchObject({ state: 'no-reference', windowFrames: 50, psiThreshold: 0.5 });
  const count = reports.length;
  monitor.setSettings({ windowFrames: 50, psiThreshold: 0.5 });
  // Nothing changed: nothing new to report.
  expect(reports).toHaveLength(count);
});
