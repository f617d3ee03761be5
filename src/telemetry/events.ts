/**
 * A model lifecycle event for the `events` output (README, "Upstream messages"). The model
 * lifecycle produces them; telemetry only carries them, so the shape lives here.
 */
/**
 * A drift crossing for the `events` output (README, "Drift"): a feature's PSI over a camera's
 * window crossed its threshold above the no-drift baseline (`drifted`), or fell back (`cleared`).
 */
export interface DriftEvent {
  event: 'drift';
  state: 'drifted' | 'cleared';
  feature: string;
  camera: string;
  psi: number;
  baseline: number;
  threshold: number;
  window: number;
  model: { name: string; version: string };
}

export interface LifecycleEvent {
  event: 'downloaded' | 'activated' | 'failed' | 'rolled-back';
  model: { name?: string | undefined; version?: string | undefined; sha256?: string | undefined };
  previousVersion?: string | null;
  error?: { code: string; message: string };
  durationMs?: number;
}
