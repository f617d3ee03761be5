import { EdgeError, ErrorCodes } from '../../errors.js';
import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import {
  asNumbers,
  checkTensor,
  shapeError,
  type DeclaredOutput,
  type OutputTensor,
} from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import { detectionAnswer, topByScore, type FrameCandidate } from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

/**
 * The lyuwenyu/RT-DETR export (docs/model-families.md, "RT-DETR, lyuwenyu/RT-DETR export"): the
 * graph takes `orig_target_sizes` (fed by the worker, scoring/extra-inputs.ts) and its own
 * post-processor answers `labels` [N, K] (int64), `boxes` [N, K, 4] as x1, y1, x2, y2 already
 * in pixels of that size, i.e. of the frame, and `scores` [N, K]. Threshold only, no NMS.
 */
export const rtdetrLyuwenyu: OutputDecoder<'rtdetr-lyuwenyu'> = {
  formats: ['rtdetr-lyuwenyu'],
  task: 'detection',
  checkOutputs,
  create: (manifest) => new LyuwenyuDecoder(manifest),
};

function checkOutputs(_manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const byName = new Map(outputs.map((o) => [o.name, o.dims]));
  const first = outputs[0] ?? { name: '(none)', dims: [] };
  for (const name of ['labels', 'boxes', 'scores']) {
    if (!byName.has(name)) {
      throw shapeError(first.name, first.dims, 'rtdetr-lyuwenyu expects outputs labels, boxes and scores');
    }
  }
  const boxes = byName.get('boxes')!;
  if (boxes.length > 0 && (boxes.length !== 3 || (typeof boxes[2] === 'number' && boxes[2] !== 4))) {
    throw shapeError('boxes', boxes, 'rtdetr-lyuwenyu expects boxes [N, K, 4]');
  }
}

class LyuwenyuDecoder implements BatchDecoder {
  constructor(private readonly manifest: ModelManifest) {}

  decode(
    _outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const frames = geometries.length;
    const labels = checkTensor('labels', outputs.labels, frames);
    const boxes = checkTensor('boxes', outputs.boxes, frames);
    const scores = checkTensor('scores', outputs.scores, frames);
    const k = boxes.dims[1] ?? 0;
    if (
      boxes.dims.length !== 3 ||
      boxes.dims[2] !== 4 ||
      scores.data.length !== frames * k ||
      labels.data.length !== frames * k
    ) {
      throw shapeError(
        'boxes',
        boxes.dims,
        'rtdetr-lyuwenyu expects boxes [N, K, 4], labels and scores [N, K]',
      );
    }
    const b = asNumbers(boxes.data);
    const s = asNumbers(scores.data);
    const l = asNumbers(labels.data);
    const { scoreThreshold, maxDetections } = this.manifest.output;
    const out: FramePrediction[] = [];
    for (let n = 0; n < frames; n++) {
      const g = geometries[n]!;
      const clipX = (v: number): number => Math.min(Math.max(v, 0), g.frameWidth);
      const clipY = (v: number): number => Math.min(Math.max(v, 0), g.frameHeight);
      const candidates: FrameCandidate[] = [];
      for (let q = 0; q < k; q++) {
        const score = s[n * k + q]!;
        if (!(score >= scoreThreshold)) continue;
        const cls = l[n * k + q]!;
        if (!(cls >= 0 && Number.isInteger(cls))) {
          throw new EdgeError(
            ErrorCodes.MODEL_SHAPE_MISMATCH,
            `rtdetr-lyuwenyu label ${cls} is not a class index`,
          );
        }
        const i = (n * k + q) * 4;
        const fx1 = clipX(b[i]!);
        const fy1 = clipY(b[i + 1]!);
        const fx2 = clipX(b[i + 2]!);
        const fy2 = clipY(b[i + 3]!);
        if (!(Math.round((fx2 - fx1) * 1000) > 0 && Math.round((fy2 - fy1) * 1000) > 0)) continue;
        candidates.push({ x1: fx1, y1: fy1, x2: fx2, y2: fy2, score, cls, fx1, fy1, fx2, fy2 });
      }
      out.push(detectionAnswer(candidates, topByScore(candidates, maxDetections), this.manifest));
    }
    return out;
  }
}
