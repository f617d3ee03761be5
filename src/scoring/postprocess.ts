import { EdgeError, ErrorCodes } from '../errors.js';
import { frameX, frameY, type FrameGeometry } from './geometry.js';
import type { ModelManifest } from './manifest.js';
import { nmsClasswise, type NmsCandidate } from './nms.js';
import {
  asNumbers,
  checkTensor,
  concrete,
  shapeError,
  type NumberTypedArray,
  type OutputTensor,
} from './output-shape.js';
import type { Classification, Detection, FramePrediction } from './prediction.js';

/**
 * Turns the output tensors of one batch into per-frame predictions (README, "How scoring
 * works"): classification top-K, YOLO detections with class-wise NMS mapped back to frame pixels,
 * or the raw tensors.
 */

// ---------------------------------------------------------------------------------------------
// Shape checks
/**
 * Checks, at model load, the declared shape of the output that postprocessing reads (the first
 * output) against the manifest. Symbolic dimensions (strings, or negative numbers) pass; an empty
 * shape (onnxruntime's "not defined") passes. Throws MODEL_SHAPE_MISMATCH otherwise:
 * - classification: [N, C], [N, 1, C] or [N, C, 1, 1]; C = labels.length when labels are given.
 * - detection yolov5: [N, boxes, 5 + C]; yolov8: [N, 4 + C, boxes]; C ≥ 1 and C = labels.length
 *   when labels are given.
 * - raw: anything.
 */
export function checkOutputShape(
  manifest: ModelManifest,
  outputName: string,
  dims: readonly (number | string)[],
): void {
  if (manifest.task === 'raw' || dims.length === 0) return;
  const nLabels = manifest.labels.length;
  if (manifest.task === 'classification') {
    let classDim: number | string | undefined;
    if (dims.length === 2) classDim = dims[1];
    else if (dims.length === 3) {
      const one = concrete(dims[1]);
      if (one !== undefined && one !== 1)
        throw shapeError(outputName, dims, 'classification expects [N, 1, C]');
      classDim = dims[2];
    } else if (dims.length === 4) {
      const h = concrete(dims[2]);
      const w = concrete(dims[3]);
      if ((h !== undefined && h !== 1) || (w !== undefined && w !== 1)) {
        throw shapeError(outputName, dims, 'classification expects [N, C, 1, 1]');
      }
      classDim = dims[1];
    } else {
      throw shapeError(outputName, dims, 'classification expects [N, C], [N, 1, C] or [N, C, 1, 1]');
    }
    const c = concrete(classDim);
    if (c === 0) throw shapeError(outputName, dims, 'no classes');
    if (c !== undefined && nLabels > 0 && c !== nLabels) {
      throw shapeError(outputName, dims, `${c} classes but the manifest has ${nLabels} labels`);
    }
    return;
  }
  // detection
  const yolov5 = manifest.output.format === 'yolov5';
  const layout = yolov5 ? '[N, boxes, 5 + C]' : '[N, 4 + C, boxes]';
  if (dims.length !== 3) throw shapeError(outputName, dims, `${manifest.output.format} expects ${layout}`);
  const rowDim = concrete(yolov5 ? dims[2] : dims[1]);
  if (rowDim === undefined) return;
  const c = rowDim - (yolov5 ? 5 : 4);
  if (c < 1) throw shapeError(outputName, dims, `${manifest.output.format} expects ${layout} with C ≥ 1`);
  if (nLabels > 0 && c !== nLabels) {
    throw shapeError(
      outputName,
      dims,
      `${c} classes implied by ${layout} but the manifest has ${nLabels} labels`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Entry point

/**
 * Post-processes one batch. `outputNames` is the session's output order (classification and
 * detection read the first one; raw returns all of them); `geometries[n]` describes frame n and
 * its length is the batch size. Throws MODEL_SHAPE_MISMATCH when a tensor does not fit the task.
 */
export function postprocessBatch(
  manifest: ModelManifest,
  outputNames: readonly string[],
  outputs: Record<string, OutputTensor>,
  geometries: readonly FrameGeometry[],
): FramePrediction[] {
  const frames = geometries.length;
  if (frames === 0) return [];
  if (manifest.task === 'raw') return postprocessRaw(outputNames, outputs, frames);
  const name = outputNames[0];
  if (name === undefined) {
    throw new EdgeError(ErrorCodes.MODEL_SHAPE_MISMATCH, 'the model has no outputs');
  }
  const tensor = checkTensor(name, outputs[name], frames);
  if (manifest.task === 'classification') return postprocessClassification(manifest, name, tensor, frames);
  return postprocessDetection(manifest, name, tensor, geometries);
}

// ---------------------------------------------------------------------------------------------
// Classification

function postprocessClassification(
  manifest: ModelManifest,
  name: string,
  tensor: OutputTensor,
  frames: number,
): FramePrediction[] {
  const { dims } = tensor;
  let classes: number;
  if (dims.length === 2) classes = dims[1]!;
  else if (dims.length === 3 && dims[1] === 1) classes = dims[2]!;
  else if (dims.length === 4 && dims[2] === 1 && dims[3] === 1) classes = dims[1]!;
  else throw shapeError(name, dims, 'classification expects [N, C], [N, 1, C] or [N, C, 1, 1]');
  if (classes < 1) throw shapeError(name, dims, 'no classes');

  const data = asNumbers(tensor.data);
  const logits = manifest.output.format === 'logits';
  const k = Math.min(Math.max(1, Math.floor(manifest.output.topK)), classes);
  const scores = new Float64Array(classes);
  const topIdx = new Int32Array(k);
  const { labels, defectLabels } = manifest;
  const out: FramePrediction[] = [];
  for (let n = 0; n < frames; n++) {
    const base = n * classes;
    for (let i = 0; i < classes; i++) scores[i] = data[base + i]!;
    if (logits) softmaxInPlace(scores);
    const count = topK(scores, k, topIdx);
    const classification: Classification[] = [];
    for (let j = 0; j < count; j++) {
      const i = topIdx[j]!;
      classification.push({ label: labels[i] ?? `class_${i}`, score: scores[i]! });
    }
    const top = classification[0];
    out.push({ defect: top !== undefined && defectLabels.includes(top.label), classification });
  }
  return out;
}

/** Numerically stable softmax: exp(x - max) / Σ exp(x - max). */
export function softmaxInPlace(v: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < v.length; i++) if (v[i]! > max) max = v[i]!;
  if (max === Infinity) {
    // Only +Infinity logits carry the mass; split it evenly between them.
    let inf = 0;
    for (let i = 0; i < v.length; i++) if (v[i] === Infinity) inf++;
    for (let i = 0; i < v.length; i++) v[i] = v[i] === Infinity ? 1 / inf : 0;
    return;
  }
  let sum = 0;
  for (let i = 0; i < v.length; i++) {
    const e = Math.exp(v[i]! - max);
    v[i] = e;
    sum += e;
  }
  for (let i = 0; i < v.length; i++) v[i] = v[i]! / sum;
}

/**
 * Writes into `out` the indices of the `k` largest scores, descending; equal scores keep index
 * order; NaN scores rank last. Returns how many were written (min(k, scores.length)).
 */
function topK(scores: Float64Array, k: number, out: Int32Array): number {
  let count = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i]!;
    // Position: after every kept entry whose score is >= s (stable), NaN treated as -Infinity.
    let pos = count;
    while (pos > 0 && ranksBelow(scores[out[pos - 1]!]!, s)) pos--;
    if (pos >= k) continue;
    const end = Math.min(count, k - 1);
    for (let j = end; j > pos; j--) out[j] = out[j - 1]!;
    out[pos] = i;
    if (count < k) count++;
  }
  return count;
}

/** True when an already-placed score `a` ranks strictly below a new score `b`. */
function ranksBelow(a: number, b: number): boolean {
  if (Number.isNaN(b)) return false;
  if (Number.isNaN(a)) return true;
  return a < b;
}

// ---------------------------------------------------------------------------------------------
// Detection

// Scratch buffers for the YOLOv8 passes, grown on demand and reused between calls
// (postprocessBatch is synchronous, so one set per thread is enough).
let passBuf = new Uint8Array(0);
let bestScoreBuf = new Float64Array(0);
let bestClassBuf = new Int32Array(0);

interface FrameCandidate extends NmsCandidate {
  /** Clipped box in frame pixels. */
  fx1: number;
  fy1: number;
  fx2: number;
  fy2: number;
}

function postprocessDetection(
  manifest: ModelManifest,
  name: string,
  tensor: OutputTensor,
  geometries: readonly FrameGeometry[],
): FramePrediction[] {
  const { dims } = tensor;
  const yolov5 = manifest.output.format === 'yolov5';
  if (dims.length !== 3) {
    throw shapeError(
      name,
      dims,
      yolov5 ? 'yolov5 expects [N, boxes, 5 + C]' : 'yolov8 expects [N, 4 + C, boxes]',
    );
  }
  const boxes = yolov5 ? dims[1]! : dims[2]!;
  const classes = yolov5 ? dims[2]! - 5 : dims[1]! - 4;
  if (classes < 1) {
    throw shapeError(
      name,
      dims,
      yolov5 ? 'yolov5 expects [N, boxes, 5 + C] with C ≥ 1' : 'yolov8 expects [N, 4 + C, boxes] with C ≥ 1',
    );
  }
  const data = asNumbers(tensor.data);
  const { scoreThreshold, iouThreshold, maxDetections } = manifest.output;
  const { labels, defectLabels } = manifest;
  const perFrame = boxes * (classes + (yolov5 ? 5 : 4));
  const out: FramePrediction[] = [];
  for (let n = 0; n < geometries.length; n++) {
    const g = geometries[n]!;
    const candidates: FrameCandidate[] = [];
    const base = n * perFrame;
    if (yolov5) collectYolov5(data, base, boxes, classes, scoreThreshold, g, candidates);
    else collectYolov8(data, base, boxes, classes, scoreThreshold, g, candidates);
    const kept = nmsClasswise(candidates, iouThreshold, maxDetections);
    const detections: Detection[] = [];
    let defect = false;
    for (const idx of kept) {
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
    out.push({ defect, detections });
  }
  return out;
}

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

/**
 * [4 + C, boxes], channel-first: channel k of box b at k × boxes + b; score = best class.
 *
 * The class scores are read channel by channel, in memory order. With a usual threshold almost no
 * score reaches it, so the fast path only flags boxes with some class score ≥ threshold (a
 * sequential read with a well-predicted branch) and then finds the best class of the flagged boxes.
 * When a sample shows many scores above the threshold (thresholds near 0, as in evaluation runs),
 * that branch would mispredict and most boxes would be flagged, so it computes the best class of
 * every box in one sequential pass instead.
 */
function collectYolov8(
  data: NumberTypedArray,
  base: number,
  boxes: number,
  classes: number,
  threshold: number,
  g: FrameGeometry,
  out: FrameCandidate[],
): void {
  const first = base + 4 * boxes;
  const end = first + classes * boxes;
  const x = (b: number) => data[base + b]!;
  const y = (b: number) => data[base + boxes + b]!;
  const w = (b: number) => data[base + 2 * boxes + b]!;
  const h = (b: number) => data[base + 3 * boxes + b]!;

  if (!manyAbove(data, first, end, threshold)) {
    if (passBuf.length < boxes) passBuf = new Uint8Array(boxes);
    const pass = passBuf;
    pass.fill(0, 0, boxes);
    for (let row = first; row < end; row += boxes) {
      for (let b = 0; b < boxes; b++) {
        // NaN fails the test, so it never flags a box.
        if (data[row + b]! >= threshold) pass[b] = 1;
      }
    }
    for (let b = 0; b < boxes; b++) {
      if (pass[b] === 0) continue;
      const cls = argmax(data, first + b, classes, boxes);
      pushCandidate(x(b), y(b), w(b), h(b), data[first + b + cls * boxes]!, cls, g, out);
    }
    return;
  }

  if (bestScoreBuf.length < boxes) {
    bestScoreBuf = new Float64Array(boxes);
    bestClassBuf = new Int32Array(boxes);
  }
  const bestScore = bestScoreBuf;
  const bestClass = bestClassBuf;
  bestScore.fill(-Infinity, 0, boxes);
  bestClass.fill(0, 0, boxes);
  for (let k = 0, row = first; k < classes; k++, row += boxes) {
    for (let b = 0; b < boxes; b++) {
      const v = data[row + b]!;
      if (v > bestScore[b]!) {
        bestScore[b] = v;
        bestClass[b] = k;
      }
    }
  }
  for (let b = 0; b < boxes; b++) {
    const score = bestScore[b]!;
    if (score >= threshold) pushCandidate(x(b), y(b), w(b), h(b), score, bestClass[b]!, g, out);
  }
}

/** The index k < count of the largest data[start + k × step] (the first of equals; NaN never wins over a number). */
function argmax(data: NumberTypedArray, start: number, count: number, step: number): number {
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

/** Whether more than 1/256 of an evenly spaced sample (about 4096 values) of data[from, to) is ≥ threshold. */
function manyAbove(data: NumberTypedArray, from: number, to: number, threshold: number): boolean {
  const step = Math.max(1, Math.floor((to - from) / 4096)) | 1;
  let samples = 0;
  let hits = 0;
  for (let i = from; i < to; i += step) {
    samples++;
    if (data[i]! >= threshold) hits++;
  }
  return hits * 256 > samples;
}

/**
 * Adds a candidate: corners in model-input pixels (NMS runs there, as in Ultralytics) and the box
 * mapped back to frame pixels and clipped to the frame. Boxes empty after clipping (entirely in
 * the letterbox padding or outside the frame) are dropped before NMS.
 */
function pushCandidate(
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

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

// ---------------------------------------------------------------------------------------------
// Raw

function postprocessRaw(
  outputNames: readonly string[],
  outputs: Record<string, OutputTensor>,
  frames: number,
): FramePrediction[] {
  const out: FramePrediction[] = [];
  for (let n = 0; n < frames; n++) out.push({ defect: false, raw: {} });
  for (const name of outputNames) {
    const tensor = checkTensor(name, outputs[name], frames);
    const per = frames === 0 ? 0 : tensor.data.length / frames;
    const dims = [1, ...tensor.dims.slice(1)];
    for (let n = 0; n < frames; n++) {
      const slice = tensor.data.subarray(n * per, (n + 1) * per);
      const data = new Array<number>(per);
      for (let i = 0; i < per; i++) data[i] = Number(slice[i]!);
      out[n]!.raw![name] = { dims: [...dims], data };
    }
  }
  return out;
}
