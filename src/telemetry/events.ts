/**
 * A model lifecycle event for the `events` output (README, "Upstream messages"). The model
 * lifecycle produces them; telemetry only carries them, so the shape lives here.
 */
export interface LifecycleEvent {
  event: 'downloaded' | 'activated' | 'failed' | 'rolled-back';
  model: { name?: string | undefined; version?: string | undefined; sha256?: string | undefined };
  previousVersion?: string | null;
  error?: { code: string; message: string };
  durationMs?: number;
}
