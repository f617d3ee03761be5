import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import {
  asNumbers,
  concrete,
  firstDeclared,
  firstTensor,
  shapeError,
  type DeclaredOutput,
  type OutputTensor,
} from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import { detectionAnswer, pushCandidate, topByScore, type FrameCandidate } from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

const LAYOUT = '[N, boxes, 6] (x1, y1, x2, y2, score, class)';

/**
 * End-to-end YOLO heads (docs/model-families.md, "End-to-end detectors"): Ultralytics YOLO26 and
 * YOLOv10 (one-to-one head, all rows filled) and YOLOv8/11 exported with `nms=True` (zero rows
 * as padding) give `[N, boxes, 6]`: corners in model-input (letterboxed) pixels, the score, the
 * class index as a float. The boxes are final: only the score threshold applies, never NMS (a
 * second NMS would drop true neighbours the model chose to keep).
 */
export const yoloEnd2end: OutputDecoder<'yolo-end2end'> = {
  formats: ['yolo-end2end'],
  task: 'detection',
  checkOutputs,
  create: (manifest) => new End2endDecoder(manifest),
};

function checkOutputs(_manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const out = firstDeclared(outputs);
  if (!out) return;
  const { name, dims } = out;
  if (dims.length !== 3) throw shapeError(name, dims, `yolo-end2end expects ${LAYOUT}`);
  const fields = concrete(dims[2]);
  if (fields !== undefined && fields !== 6) {
    throw shapeError(name, dims, `yolo-end2end expects ${LAYOUT}; this looks like another layout`);
  }
}

class End2endDecoder implements BatchDecoder {
  constructor(private readonly manifest: ModelManifest) {}

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const { name, tensor } = firstTensor(outputNames, outputs, geometries.length);
    const { dims } = tensor;
    if (dims.length !== 3 || dims[2] !== 6) {
      throw shapeError(name, dims, `yolo-end2end expects ${LAYOUT}`);
    }
    const rows = dims[1]!;
    const data = asNumbers(tensor.data);
    const { scoreThreshold, maxDetections } = this.manifest.output;
    const out: FramePrediction[] = [];
    for (let n = 0; n < geometries.length; n++) {
      const g = geometries[n]!;
      const candidates: FrameCandidate[] = [];
      for (let r = 0, i = n * rows * 6; r < rows; r++, i += 6) {
        const score = data[i + 4]!;
        // NaN fails; zero padding rows fail any positive threshold and are empty boxes anyway.
        if (!(score >= scoreThreshold)) continue;
        const x1 = data[i]!;
        const y1 = data[i + 1]!;
        const x2 = data[i + 2]!;
        const y2 = data[i + 3]!;
        const cls = Math.round(data[i + 5]!);
        if (!(cls >= 0)) continue;
        pushCandidate((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, score, cls, g, candidates);
      }
      out.push(detectionAnswer(candidates, topByScore(candidates, maxDetections), this.manifest));
    }
    return out;
  }
}
