import { pino } from 'pino';
import type { ScoringSettings } from '../../src/config.js';
import { ModelRuntime } from '../../src/scoring/model-runtime.js';
import { Metrics } from '../../src/telemetry/metrics.js';

/**
 * Loads a model runtime straight, without a daemon around it (tests of the runtime's workers):
 * CPU, one intra-op thread, a short batch delay, silent logs; `settings` overrides the rest.
 */
export function loadRuntime(
  modelPath: string,
  settings: Partial<ScoringSettings> & Pick<ScoringSettings, 'workers'>,
  signal?: AbortSignal,
): Promise<ModelRuntime> {
  return ModelRuntime.load({
    modelPath,
    role: 'active',
    ...(signal ? { signal } : {}),
    settings: {
      executionProviders: ['cpu'],
      maxBatchSize: 8,
      maxBatchDelayMs: 2,
      maxQueue: 1024,
      intraOpThreads: 1,
      intraOpSpinning: false,
      ...settings,
    },
    warmupRuns: 1,
    logger: pino({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
  });
}
