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
import type { Detection, FramePrediction } from '../prediction.js';
import { corners, regularize, rotatedNms, type RotatedCandidate } from '../rotated.js';
import { argmax } from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

/**
 * Ultralytics YOLO-OBB (docs/model-families.md, "Oriented boxes"). `yolo-obb`: the raw head
 * [N, 4 + C + 1, boxes] (cx, cy, w, h, one score per class, the angle in radians), class-wise
 * rotated NMS with ProbIoU. `yolo-obb-end2end` (YOLO26): [N, boxes, 7] = cx, cy, w, h, score,
 * class, angle, final boxes, threshold only. Coordinates are letterboxed-input pixels.
 */
export const yoloObb: OutputDecoder<'yolo-obb' | 'yolo-obb-end2end'> = {
  formats: ['yolo-obb', 'yolo-obb-end2end'],
  task: 'detection',
  checkOutputs,
  create: (manifest) => new ObbDecoder(manifest),
};

const RAW = '[N, 4 + C + 1, boxes] (cx, cy, w, h, C scores, angle)';
const E2E = '[N, boxes, 7] (cx, cy, w, h, score, class, angle)';

function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const out = firstDeclared(outputs);
  if (!out) return;
  const { name, dims } = out;
  const e2e = manifest.output.format === 'yolo-obb-end2end';
  const layout = e2e ? E2E : RAW;
  if (dims.length !== 3) throw shapeError(name, dims, `${manifest.output.format} expects ${layout}`);
  const fields = concrete(dims[e2e ? 2 : 1]);
  if (fields === undefined) return;
  if (e2e) {
    if (fields !== 7) throw shapeError(name, dims, `yolo-obb-end2end expects ${E2E}`);
    return;
  }
  const c = fields - 5;
  const nLabels = manifest.labels.length;
  if (c < 1 || (nLabels > 0 && c !== nLabels)) {
    throw shapeError(name, dims, `yolo-obb expects ${RAW} with C = ${nLabels || '≥ 1'}`);
  }
}

class ObbDecoder implements BatchDecoder {
  private readonly e2e: boolean;

  constructor(private readonly manifest: ModelManifest) {
    this.e2e = manifest.output.format === 'yolo-obb-end2end';
  }

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const { name, tensor } = firstTensor(outputNames, outputs, geometries.length);
    const { dims } = tensor;
    const layout = this.e2e ? E2E : RAW;
    if (dims.length !== 3) throw shapeError(name, dims, `expects ${layout}`);
    const fields = this.e2e ? dims[2]! : dims[1]!;
    const boxes = this.e2e ? dims[1]! : dims[2]!;
    if (this.e2e ? fields !== 7 : fields < 6) throw shapeError(name, dims, `expects ${layout}`);
    const data = asNumbers(tensor.data);
    const { scoreThreshold, iouThreshold, maxDetections } = this.manifest.output;
    const out: FramePrediction[] = [];
    for (let n = 0; n < geometries.length; n++) {
      const base = n * fields * boxes;
      const cand: RotatedCandidate[] = [];
      for (let b = 0; b < boxes; b++) {
        // Raw head: field k of box b at k × boxes + b; end-to-end: row b, field k at b × 7 + k.
        const at = (k: number): number => data[this.e2e ? base + b * 7 + k : base + k * boxes + b]!;
        let score: number;
        let cls: number;
        let angle: number;
        if (this.e2e) {
          score = at(4);
          cls = Math.round(at(5));
          angle = at(6);
        } else {
          cls = argmax(data, base + 4 * boxes + b, fields - 5, boxes);
          score = at(4 + cls);
          angle = at(fields - 1);
        }
        if (!(score >= scoreThreshold) || !(cls >= 0)) continue;
        const w = at(2);
        const h = at(3);
        if (!(w > 0 && h > 0)) continue;
        cand.push(regularize({ cx: at(0), cy: at(1), w, h, angle, score, cls }));
      }
      const kept = this.e2e
        ? cand
            .map((_, i) => i)
            .sort((a, b) => cand[b]!.score - cand[a]!.score || a - b)
            .slice(0, maxDetections)
        : rotatedNms(cand, iouThreshold, maxDetections);
      out.push(this.answer(cand, kept, geometries[n]!));
    }
    return out;
  }

  private answer(
    cand: readonly RotatedCandidate[],
    kept: readonly number[],
    g: FrameGeometry,
  ): FramePrediction {
    const { labels, defectLabels } = this.manifest;
    const fx = (x: number): number => (x - g.offsetX) / g.scaleX;
    const fy = (y: number): number => (y - g.offsetY) / g.scaleY;
    const detections: Detection[] = [];
    let defect = false;
    for (const i of kept) {
      const c = cand[i]!;
      const label = labels[c.cls] ?? `class_${c.cls}`;
      const pts = corners(c).map(([x, y]) => [fx(x), fy(y)] as [number, number]);
      const xs = pts.map((p) => clamp(p[0], 0, g.frameWidth));
      const ys = pts.map((p) => clamp(p[1], 0, g.frameHeight));
      const x1 = Math.min(...xs);
      const y1 = Math.min(...ys);
      const width = r3(Math.max(...xs) - x1);
      const height = r3(Math.max(...ys) - y1);
      if (!(width > 0 && height > 0)) continue;
      if (defectLabels.includes(label)) defect = true;
      detections.push({
        label,
        score: c.score,
        box: { x: r3(x1), y: r3(y1), width, height },
        // Exact with letterbox (one scale for both axes); with stretch the sides are scaled per axis.
        rotatedBox: {
          cx: r3(fx(c.cx)),
          cy: r3(fy(c.cy)),
          width: r3(c.w / Math.sqrt(g.scaleX * g.scaleY)),
          height: r3(c.h / Math.sqrt(g.scaleX * g.scaleY)),
          angle: Math.round(c.angle * 1e6) / 1e6,
        },
        corners: pts.map(([x, y]) => [r3(x), r3(y)]),
      });
    }
    return { defect, detections };
  }
}

const r3 = (v: number): number => Math.round(v * 1000) / 1000;
const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);
