import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import type { NumberTypedArray, OutputTensor } from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import {
  argmax,
  checkDetectionOutputs,
  decodeDetections,
  pushCandidate,
  type DetectionLayout,
  type FrameCandidate,
} from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

const LAYOUT: DetectionLayout = {
  format: 'yolov8',
  layout: '[N, 4 + C, boxes]',
  boxFields: 4,
  fieldsAxis: 1,
};

/**
 * YOLOv8 and later Ultralytics exports: [N, 4 + C, boxes], channel-first (channel k of box b at
 * k × boxes + b): cx, cy, w, h, then one score per class; no objectness.
 */
export const yolov8: OutputDecoder<'yolov8'> = {
  formats: ['yolov8'],
  task: 'detection',
  checkOutputs: (manifest, outputs) => checkDetectionOutputs(manifest, outputs, LAYOUT),
  create: (manifest) => new Yolov8Decoder(manifest),
};

class Yolov8Decoder implements BatchDecoder {
  /** Scratch for the collection passes, grown on demand and reused between batches. */
  private passBuf = new Uint8Array(0);
  private bestScoreBuf = new Float64Array(0);
  private bestClassBuf = new Int32Array(0);
  private readonly collect = this.collectYolov8.bind(this);

  constructor(private readonly manifest: ModelManifest) {}

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    return decodeDetections(this.manifest, outputNames, outputs, geometries, LAYOUT, this.collect);
  }

  /**
   * Score = best class.
   *
   * The class scores are read channel by channel, in memory order. With a usual threshold almost no
   * score reaches it, so the fast path only flags boxes with some class score ≥ threshold (a
   * sequential read with a well-predicted branch) and then finds the best class of the flagged
   * boxes. When a sample shows many scores above the threshold (thresholds near 0, as in
   * evaluation runs), that branch would mispredict and most boxes would be flagged, so it computes
   * the best class of every box in one sequential pass instead.
   */
  private collectYolov8(
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
      if (this.passBuf.length < boxes) this.passBuf = new Uint8Array(boxes);
      const pass = this.passBuf;
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

    if (this.bestScoreBuf.length < boxes) {
      this.bestScoreBuf = new Float64Array(boxes);
      this.bestClassBuf = new Int32Array(boxes);
    }
    const bestScore = this.bestScoreBuf;
    const bestClass = this.bestClassBuf;
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
