/** Telemetry settings: the twin's desired `telemetry` block (README, "Upstream messages"). */
export interface TelemetrySettings {
  results: 'all' | 'defects' | 'none';
  maxBatchMessages: number;
  flushIntervalMs: number;
  statsIntervalSec: number;
}

export const DEFAULT_TELEMETRY: TelemetrySettings = Object.freeze({
  results: 'defects',
  maxBatchMessages: 100,
  flushIntervalMs: 1000,
  statsIntervalSec: 60,
});
