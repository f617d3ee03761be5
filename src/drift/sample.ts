import type { ScoredFrame } from '../scoring/engine.js';
import type { FramePrediction } from '../scoring/prediction.js';
import { frameFeatures } from './features.js';
import type { FrameSample } from './profile.js';

/**
 * The answer's part of a drift sample: the top score and the frame's label — the top class, the
 * best detection's label (`none` without one), `anomalous`/`normal` for anomaly models.
 */
export function answerSample(p: FramePrediction): Pick<FrameSample, 'topScore' | 'label'> {
  if (p.anomaly) return { topScore: p.anomaly.score, label: p.defect ? 'anomalous' : 'normal' };
  const top = p.classification?.[0];
  if (top) return { topScore: top.score, label: top.label };
  if (p.detections) {
    const best = p.detections.reduce<(typeof p.detections)[number] | undefined>(
      (a, d) => (a === undefined || d.score > a.score ? d : a),
      undefined,
    );
    return best ? { topScore: best.score, label: best.label } : { topScore: 0, label: 'none' };
  }
  return { topScore: 0, label: 'raw' };
}

/**
 * What one scored frame contributes to a drift profile: its input features and its answer. The
 * daemon's monitor and `model-patch --reference` both use this, so a reference and the windows it
 * is compared with are measured the same way.
 */
export async function sampleOf(f: Pick<ScoredFrame, 'frame' | 'prediction'>): Promise<FrameSample> {
  return { ...(await frameFeatures(f.frame)), ...answerSample(f.prediction) };
}
