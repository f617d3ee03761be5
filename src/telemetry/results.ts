import type { FrameResult } from './publisher.js';

/**
 * What the `results` output reads of a scored frame. Declared here, by shape, so telemetry depends
 * on nothing of scoring: the engine's ScoredFrame fits it (docs/architecture.md).
 */
export interface ScoredFrameFields {
  frameId: string;
  cameraId: string | null;
  model: { name: string; version: string };
  prediction: {
    defect: boolean;
    classification?: FrameResult['classification'];
    detections?: FrameResult['detections'];
    anomaly?: FrameResult['anomaly'];
  };
  timing: { totalMs: number };
  at: string;
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** A scored frame as it travels upstream in the `results` output. */
export function resultOf(f: ScoredFrameFields): FrameResult {
  const p = f.prediction;
  return {
    frameId: f.frameId,
    cameraId: f.cameraId,
    model: { name: f.model.name, version: f.model.version },
    defect: p.defect,
    ...(p.classification ? { classification: p.classification } : {}),
    ...(p.detections ? { detections: p.detections } : {}),
    ...(p.anomaly
      ? { anomaly: { score: p.anomaly.score, threshold: p.anomaly.threshold, regions: p.anomaly.regions } }
      : {}),
    totalMs: round(f.timing.totalMs),
    at: f.at,
  };
}
