import { frameX, frameY, type FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import { nmsClasswise, type NmsCandidate } from '../nms.js';
import {
  asNumbers,
  concrete,
  firstDeclared,
  firstTensor,
  shapeError,
  type DeclaredOutput,
  type NumberTypedArray,
  type OutputTensor,
} from '../output-shape.js';
import type { Detection, FramePrediction } from '../prediction.js';

/**
 * What the YOLO-style detection decoders share (this file is a helper, not a registry entry): the
 * check of a [N, ·, ·] output that carries box fields plus C class scores per box, and the path
 * from scored boxes to the answer (mapped back to the frame, class-wise NMS, defect decision).
 * Each format only says where its numbers are (`DetectionLayout`) and how to read the candidates
 * of one frame (`CollectCandidates`).
 */

export interface DetectionLayout {
  /** The manifest output.format, as named in error messages. */
  format: string;
  /** The layout as written in error messages, e.g. '[N, boxes, 5 + C]'. */
  layout: string;
  /** Numbers per box before the class scores (cx, cy, w, h and, for YOLOv5, objectness). */
  boxFields: number;
  /** Which dimension of [N, a, b] holds boxFields + C (the other one counts the boxes). */
  fieldsAxis: 1 | 2;
}

export interface FrameCandidate extends NmsCandidate {
  /** Clipped box in frame pixels. */
  fx1: number;
  fy1: number;
  fx2: number;
  fy2: number;
}

/**
 * Appends to `out` the candidates of one frame whose score reaches `threshold`, through
 * `pushCandidate`. The frame's numbers start at data[base].
 */
export type CollectCandidates = (
  data: NumberTypedArray,
  base: number,
  boxes: number,
  classes: number,
  threshold: number,
  g: FrameGeometry,
  out: FrameCandidate[],
) => void;

/**
 * Load-time check of the first output: rank 3, C ≥ 1, and C = labels.length when labels are
 * given. A symbolic fields dimension passes.
 */
export function checkDetectionOutputs(
  manifest: ModelManifest,
  outputs: readonly DeclaredOutput[],
  { format, layout, boxFields, fieldsAxis }: DetectionLayout,
): void {
  const out = firstDeclared(outputs);
  if (!out) return;
  const { name: outputName, dims } = out;
  const nLabels = manifest.labels.length;
  if (dims.length !== 3) throw shapeError(outputName, dims, `${format} expects ${layout}`);
  const rowDim = concrete(dims[fieldsAxis]);
  if (rowDim === undefined) return;
  const c = rowDim - boxFields;
  if (c < 1) throw shapeError(outputName, dims, `${format} expects ${layout} with C ≥ 1`);
  if (nLabels > 0 && c !== nLabels) {
    throw shapeError(
      outputName,
      dims,
      `${c} classes implied by ${layout} but the manifest has ${nLabels} labels`,
    );
  }
}

/**
 * Decodes one batch: reads the first output, collects each frame's candidates with its own
 * geometry, runs class-wise NMS in model-input pixels (as Ultralytics does) and reports the kept
 * boxes in frame pixels, by score descending.
 */
export function decodeDetections(
  manifest: ModelManifest,
  outputNames: readonly string[],
  outputs: Record<string, OutputTensor>,
  geometries: readonly FrameGeometry[],
  { format, layout, boxFields, fieldsAxis }: DetectionLayout,
  collect: CollectCandidates,
): FramePrediction[] {
  const { name, tensor } = firstTensor(outputNames, outputs, geometries.length);
  const { dims } = tensor;
  if (dims.length !== 3) throw shapeError(name, dims, `${format} expects ${layout}`);
  const boxes = dims[fieldsAxis === 1 ? 2 : 1]!;
  const classes = dims[fieldsAxis]! - boxFields;
  if (classes < 1) throw shapeError(name, dims, `${format} expects ${layout} with C ≥ 1`);
  const data = asNumbers(tensor.data);
  const { scoreThreshold, iouThreshold, maxDetections } = manifest.output;
  const perFrame = boxes * (classes + boxFields);
  const out: FramePrediction[] = [];
  for (let n = 0; n < geometries.length; n++) {
    const g = geometries[n]!;
    const candidates: FrameCandidate[] = [];
    collect(data, n * perFrame, boxes, classes, scoreThreshold, g, candidates);
    const kept = nmsClasswise(candidates, iouThreshold, maxDetections);
    out.push(detectionAnswer(candidates, kept, manifest));
  }
  return out;
}

/**
 * The answer of one frame from its candidates: `order` lists the indices to report, in order
 * (the boxes NMS kept, or for end-to-end heads the best scores). The frame is a defect when any
 * reported label is a defect label.
 */
export function detectionAnswer(
  candidates: readonly FrameCandidate[],
  order: readonly number[],
  manifest: Pick<ModelManifest, 'labels' | 'defectLabels'>,
): FramePrediction {
  const { labels, defectLabels } = manifest;
  const detections: Detection[] = [];
  let defect = false;
  for (const idx of order) {
    const c = candidates[idx]!;
    const label = labels[c.cls] ?? `class_${c.cls}`;
    if (!defect && defectLabels.includes(label)) defect = true;
    detections.push({
      label,
      score: c.score,
      box: {
        x: round3(c.fx1),
        y: round3(c.fy1),
        width: round3(c.fx2 - c.fx1),
        height: round3(c.fy2 - c.fy1),
      },
    });
  }
  return { defect, detections };
}

/**
 * The indices of the `max` best-scored candidates, by score descending (equal scores keep their
 * order). End-to-end heads have already chosen their boxes: they get this instead of NMS.
 */
export function topByScore(candidates: readonly FrameCandidate[], max: number): number[] {
  const idx = candidates.map((_, i) => i);
  idx.sort((a, b) => candidates[b]!.score - candidates[a]!.score || a - b);
  return idx.slice(0, max);
}

/**
 * Adds a candidate: corners in model-input pixels (NMS runs there, as in Ultralytics) and the box
 * mapped back to frame pixels and clipped to the frame. Boxes empty after clipping (entirely in
 * the letterbox padding or outside the frame) are dropped before NMS.
 */
export function pushCandidate(
  cx: number,
  cy: number,
  w: number,
  h: number,
  score: number,
  cls: number,
  g: FrameGeometry,
  out: FrameCandidate[],
): void {
  const x1 = cx - w / 2;
  const y1 = cy - h / 2;
  const x2 = cx + w / 2;
  const y2 = cy + h / 2;
  const fx1 = frameX(g, x1);
  const fy1 = frameY(g, y1);
  const fx2 = frameX(g, x2);
  const fy2 = frameY(g, y2);
  // Compare what will be reported (3 decimals), so no zero-size box survives rounding. NaN fails.
  if (!(round3(fx2 - fx1) > 0 && round3(fy2 - fy1) > 0)) return;
  out.push({ x1, y1, x2, y2, score, cls, fx1, fy1, fx2, fy2 });
}

/** The index k < count of the largest data[start + k × step] (the first of equals; NaN never wins over a number). */
export function argmax(data: NumberTypedArray, start: number, count: number, step: number): number {
  let best = data[start]!;
  let at = 0;
  for (let k = 1, i = start + step; k < count; k++, i += step) {
    const v = data[i]!;
    // A NaN first value is replaced by any number after it, as the -Infinity start did.
    if (v > best || (best !== best && v === v)) {
      best = v;
      at = k;
    }
  }
  return at;
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}
