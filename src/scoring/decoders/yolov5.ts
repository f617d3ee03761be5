import type { FrameGeometry } from '../geometry.js';
import type { NumberTypedArray } from '../output-shape.js';
import {
  argmax,
  checkDetectionOutputs,
  decodeDetections,
  pushCandidate,
  type DetectionLayout,
  type FrameCandidate,
} from './detection.js';
import type { OutputDecoder } from './index.js';

const LAYOUT: DetectionLayout = {
  format: 'yolov5',
  layout: '[N, boxes, 5 + C]',
  boxFields: 5,
  fieldsAxis: 2,
};

/** YOLOv5 exports: [N, boxes, 5 + C], one row per box: cx, cy, w, h, objectness, class scores. */
export const yolov5: OutputDecoder<'yolov5'> = {
  formats: ['yolov5'],
  task: 'detection',
  checkOutputs: (manifest, outputs) => checkDetectionOutputs(manifest, outputs, LAYOUT),
  create: (manifest) => ({
    decode: (outputNames, outputs, geometries) =>
      decodeDetections(manifest, outputNames, outputs, geometries, LAYOUT, collectYolov5),
  }),
};

/** [boxes, 5 + C] rows: cx, cy, w, h, obj, cls…; score = obj × best cls. */
function collectYolov5(
  data: NumberTypedArray,
  base: number,
  boxes: number,
  classes: number,
  threshold: number,
  g: FrameGeometry,
  out: FrameCandidate[],
): void {
  const stride = classes + 5;
  for (let b = 0; b < boxes; b++) {
    const row = base + b * stride;
    const obj = data[row + 4]!;
    // Class scores are probabilities (≤ 1), so obj < threshold cannot reach it: skip early, as
    // YOLOv5's own NMS does. NaN fails this test too.
    if (!(obj >= threshold)) continue;
    const cls = argmax(data, row + 5, classes, 1);
    const score = obj * data[row + 5 + cls]!;
    if (!(score >= threshold)) continue;
    pushCandidate(data[row]!, data[row + 1]!, data[row + 2]!, data[row + 3]!, score, cls, g, out);
  }
}
