import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import type { Classification, FramePrediction } from '../prediction.js';
import {
  asNumbers,
  concrete,
  firstDeclared,
  firstTensor,
  shapeError,
  type DeclaredOutput,
  type OutputTensor,
} from '../output-shape.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

/**
 * Classification: one score per class in the first output, as probabilities or as logits (a
 * softmax makes them probabilities); the answer is the top-K, and the frame is a defect when the
 * top-1 label is a defect label.
 */
export const classification: OutputDecoder<'probabilities' | 'logits'> = {
  formats: ['probabilities', 'logits'],
  task: 'classification',
  checkOutputs,
  create: (manifest) => new ClassificationDecoder(manifest),
};

/**
 * Accepts [N, C], [N, 1, C] or [N, C, 1, 1]; C = labels.length when labels are given. Symbolic
 * dimensions pass.
 */
function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const out = firstDeclared(outputs);
  if (!out) return;
  const { name: outputName, dims } = out;
  const nLabels = manifest.labels.length;
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
}

/** The class count of a runtime tensor; throws MODEL_SHAPE_MISMATCH for other layouts. */
function classesOf(name: string, tensor: OutputTensor): number {
  const { dims } = tensor;
  let classes: number;
  if (dims.length === 2) classes = dims[1]!;
  else if (dims.length === 3 && dims[1] === 1) classes = dims[2]!;
  else if (dims.length === 4 && dims[2] === 1 && dims[3] === 1) classes = dims[1]!;
  else throw shapeError(name, dims, 'classification expects [N, C], [N, 1, C] or [N, C, 1, 1]');
  if (classes < 1) throw shapeError(name, dims, 'no classes');
  return classes;
}

class ClassificationDecoder implements BatchDecoder {
  private readonly logits: boolean;
  /** Scratch: one frame's scores and its top-K indices, sized to the model's class count. */
  private scores = new Float64Array(0);
  private topIdx = new Int32Array(0);

  constructor(private readonly manifest: ModelManifest) {
    this.logits = manifest.output.format === 'logits';
  }

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const frames = geometries.length;
    const { name, tensor } = firstTensor(outputNames, outputs, frames);
    const classes = classesOf(name, tensor);
    const data = asNumbers(tensor.data);
    const k = Math.min(Math.max(1, Math.floor(this.manifest.output.topK)), classes);
    if (this.scores.length !== classes) this.scores = new Float64Array(classes);
    if (this.topIdx.length !== k) this.topIdx = new Int32Array(k);
    const { scores, topIdx, logits } = this;
    const { labels, defectLabels } = this.manifest;
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
