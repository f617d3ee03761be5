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
import { argmax, detectionAnswer, pushCandidate, topByScore, type FrameCandidate } from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

const LAYOUT = '[N, queries, 4 + C] (cx, cy, w, h normalised to 0..1, one score per class)';

/**
 * Ultralytics RT-DETR exports (docs/model-families.md, "RT-DETR"): one row per query, box centre
 * and size normalised to the model input (0..1), then one sigmoid score per class. Each query is
 * one object: its best class, the score threshold, no NMS. Ultralytics feeds RT-DETR a stretched
 * (not letterboxed) frame, so its manifests default to `resize: "stretch"`.
 */
export const rtdetr: OutputDecoder<'rtdetr'> = {
  formats: ['rtdetr'],
  task: 'detection',
  checkOutputs,
  create: (manifest) => new RtdetrDecoder(manifest),
};

function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const out = firstDeclared(outputs);
  if (!out) return;
  const { name, dims } = out;
  if (dims.length !== 3) throw shapeError(name, dims, `rtdetr expects ${LAYOUT}`);
  const fields = concrete(dims[2]);
  if (fields === undefined) return;
  const c = fields - 4;
  if (c < 1) throw shapeError(name, dims, `rtdetr expects ${LAYOUT} with C ≥ 1`);
  const nLabels = manifest.labels.length;
  if (nLabels > 0 && c !== nLabels) {
    throw shapeError(name, dims, `${c} classes implied by ${LAYOUT} but the manifest has ${nLabels} labels`);
  }
}

class RtdetrDecoder implements BatchDecoder {
  constructor(private readonly manifest: ModelManifest) {}

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const { name, tensor } = firstTensor(outputNames, outputs, geometries.length);
    const { dims } = tensor;
    if (dims.length !== 3 || dims[2]! < 5) throw shapeError(name, dims, `rtdetr expects ${LAYOUT}`);
    const queries = dims[1]!;
    const fields = dims[2]!;
    const classes = fields - 4;
    const data = asNumbers(tensor.data);
    const { width, height } = this.manifest.input;
    const { scoreThreshold, maxDetections } = this.manifest.output;
    const out: FramePrediction[] = [];
    for (let n = 0; n < geometries.length; n++) {
      const g = geometries[n]!;
      const candidates: FrameCandidate[] = [];
      for (let q = 0, i = n * queries * fields; q < queries; q++, i += fields) {
        const cls = argmax(data, i + 4, classes, 1);
        const score = data[i + 4 + cls]!;
        if (!(score >= scoreThreshold)) continue;
        const cx = data[i]! * width;
        const cy = data[i + 1]! * height;
        const w = data[i + 2]! * width;
        const h = data[i + 3]! * height;
        pushCandidate(cx, cy, w, h, score, cls, g, candidates);
      }
      out.push(detectionAnswer(candidates, topByScore(candidates, maxDetections), this.manifest));
    }
    return out;
  }
}
