import { EdgeError, ErrorCodes } from '../../errors.js';
import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import { maskPolygon, type Prototypes } from '../masks.js';
import { nmsClasswise } from '../nms.js';
import {
  asNumbers,
  checkTensor,
  concrete,
  shapeError,
  type DeclaredOutput,
  type OutputTensor,
} from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import { argmax, detectionAnswer, pushCandidate, topByScore, type FrameCandidate } from './detection.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

/**
 * YOLO instance segmentation (docs/model-families.md, "Instance segmentation"). Ultralytics
 * `yolo…-seg` exports have two outputs: `output0` with the boxes and, per box, `nm` mask
 * coefficients (32), and `output1`, the mask prototypes `[N, nm, mh, mw]` (160 × 160 for a 640
 * input). `yolo-seg` is the NMS head: `output0` `[N, 4 + C + nm, boxes]` (cx, cy, w, h in input
 * pixels, C class scores, nm coefficients), class-wise NMS as for `yolov8`. `yolo-seg-end2end` is
 * the end-to-end head (YOLO26, or an export with `nms=True`): `[N, boxes, 6 + nm]` (x1, y1, x2,
 * y2, score, class, nm coefficients), final boxes, no NMS. Each kept box gets its mask as a
 * polygon in frame pixels (../masks.ts).
 */
export const yoloSeg: OutputDecoder<'yolo-seg' | 'yolo-seg-end2end'> = {
  formats: ['yolo-seg', 'yolo-seg-end2end'],
  task: 'detection',
  checkOutputs,
  create: (manifest) => new SegDecoder(manifest),
};

const LAYOUTS = {
  'yolo-seg': '[N, 4 + C + nm, boxes] and prototypes [N, nm, mh, mw]',
  'yolo-seg-end2end': '[N, boxes, 6 + nm] and prototypes [N, nm, mh, mw]',
} as const;

function layoutOf(manifest: ModelManifest): string {
  return manifest.output.format === 'yolo-seg-end2end' ? LAYOUTS['yolo-seg-end2end'] : LAYOUTS['yolo-seg'];
}

function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const format = manifest.output.format;
  const layout = layoutOf(manifest);
  const [boxes, protos] = outputs;
  if (!boxes || boxes.dims.length === 0) return;
  if (boxes.dims.length !== 3) throw shapeError(boxes.name, boxes.dims, `${format} expects ${layout}`);
  if (!protos || protos.dims.length !== 4) {
    throw new EdgeError(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
      `${format} expects a second output, the mask prototypes [N, nm, mh, mw]; the model has ${
        protos ? `'${protos.name}' [${protos.dims.join(', ')}]` : 'none'
      }`,
    );
  }
  const nm = concrete(protos.dims[1]);
  const fields = concrete(boxes.dims[format === 'yolo-seg-end2end' ? 2 : 1]);
  if (nm === undefined || fields === undefined) return;
  const classes = format === 'yolo-seg-end2end' ? undefined : fields - 4 - nm;
  if (format === 'yolo-seg-end2end' ? fields !== 6 + nm : classes! < 1) {
    throw shapeError(
      boxes.name,
      boxes.dims,
      `${format} expects ${layout} with nm = ${nm} from the prototypes`,
    );
  }
  const labels = manifest.labels.length;
  if (classes !== undefined && labels > 0 && classes !== labels) {
    throw shapeError(
      boxes.name,
      boxes.dims,
      `${classes} classes implied by ${layout} but the manifest has ${labels} labels`,
    );
  }
}

interface SegCandidate extends FrameCandidate {
  /** Where its mask coefficients start in the output and the step between them. */
  coefAt: number;
  coefStep: number;
}

class SegDecoder implements BatchDecoder {
  constructor(private readonly manifest: ModelManifest) {}

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const frames = geometries.length;
    const format = this.manifest.output.format;
    const layout = layoutOf(this.manifest);
    const [boxName, protoName] = outputNames;
    if (boxName === undefined || protoName === undefined) {
      throw new EdgeError(ErrorCodes.MODEL_SHAPE_MISMATCH, `${format} expects two outputs: ${layout}`);
    }
    const boxT = checkTensor(boxName, outputs[boxName], frames);
    const protoT = checkTensor(protoName, outputs[protoName], frames);
    if (boxT.dims.length !== 3) throw shapeError(boxName, boxT.dims, `${format} expects ${layout}`);
    if (protoT.dims.length !== 4) throw shapeError(protoName, protoT.dims, `${format} expects ${layout}`);
    const [, nm, mh, mw] = protoT.dims as [number, number, number, number];
    const end2end = format === 'yolo-seg-end2end';
    const data = asNumbers(boxT.data);
    const protoData = asNumbers(protoT.data);
    const { scoreThreshold, iouThreshold, maxDetections } = this.manifest.output;
    const out: FramePrediction[] = [];
    for (let n = 0; n < frames; n++) {
      const g = geometries[n]!;
      const candidates: SegCandidate[] = [];
      if (end2end) {
        const rows = boxT.dims[1]!;
        const fields = boxT.dims[2]!;
        if (fields !== 6 + nm) throw shapeError(boxName, boxT.dims, `${format} expects ${layout}`);
        for (let r = 0, i = n * rows * fields; r < rows; r++, i += fields) {
          const score = data[i + 4]!;
          if (!(score >= scoreThreshold)) continue;
          const cls = Math.round(data[i + 5]!);
          if (!(cls >= 0)) continue;
          const [x1, y1, x2, y2] = [data[i]!, data[i + 1]!, data[i + 2]!, data[i + 3]!];
          const before = candidates.length;
          pushCandidate((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, score, cls, g, candidates);
          if (candidates.length > before) Object.assign(candidates[before]!, { coefAt: i + 6, coefStep: 1 });
        }
      } else {
        const boxes = boxT.dims[2]!;
        const classes = boxT.dims[1]! - 4 - nm;
        if (classes < 1) throw shapeError(boxName, boxT.dims, `${format} expects ${layout}`);
        const base = n * boxes * (4 + classes + nm);
        const first = base + 4 * boxes;
        for (let b = 0; b < boxes; b++) {
          const cls = argmax(data, first + b, classes, boxes);
          const score = data[first + b + cls * boxes]!;
          if (!(score >= scoreThreshold)) continue;
          const before = candidates.length;
          pushCandidate(
            data[base + b]!,
            data[base + boxes + b]!,
            data[base + 2 * boxes + b]!,
            data[base + 3 * boxes + b]!,
            score,
            cls,
            g,
            candidates,
          );
          if (candidates.length > before)
            Object.assign(candidates[before]!, { coefAt: base + (4 + classes) * boxes + b, coefStep: boxes });
        }
      }
      const kept = end2end
        ? topByScore(candidates, maxDetections)
        : nmsClasswise(candidates, iouThreshold, maxDetections);
      const answer = detectionAnswer(candidates, kept, this.manifest);
      const protos: Prototypes = {
        data: protoData,
        base: n * nm * mh * mw,
        count: nm,
        height: mh,
        width: mw,
      };
      kept.forEach((idx, k) => {
        const c = candidates[idx]!;
        const coefficients = Array.from({ length: nm }, (_, j) => data[c.coefAt + j * c.coefStep]!);
        answer.detections![k]!.mask = {
          polygon: maskPolygon(protos, coefficients, c, this.manifest.input, g),
        };
      });
      out.push(answer);
    }
    return out;
  }
}
