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
  /** A board scored by regions: the per-region results and the layout they came from. */
  regions?: {
    id: string;
    ref?: string;
    prediction: {
      defect: boolean;
      classification?: { label: string; score: number }[];
      detections?: { label: string; score: number }[];
      anomaly?: { score: number };
    };
  }[];
  layout?: string;
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
    ...(f.regions ? { board: boardOf(f.regions, f.layout) } : {}),
    totalMs: round(f.timing.totalMs),
    at: f.at,
  };
}

/** A board's upstream summary: the region count and each defective region with its top answer. */
function boardOf(
  regions: NonNullable<ScoredFrameFields['regions']>,
  layout: string | undefined,
): FrameResult['board'] {
  const defective = regions
    .filter((r) => r.prediction.defect)
    .map((r) => {
      const p = r.prediction;
      const top = p.classification?.[0] ?? p.detections?.[0];
      return {
        id: r.id,
        ...(r.ref ? { ref: r.ref } : {}),
        ...(top ? { label: top.label, score: top.score } : p.anomaly ? { score: p.anomaly.score } : {}),
      };
    });
  return { layout: layout ?? null, regions: regions.length, defectiveRegions: defective };
}
