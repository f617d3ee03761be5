import { EdgeError, ErrorCodes } from '../../errors.js';
import { anomalyRegions, smallMap } from '../anomaly-regions.js';
import { inputRectInFrame, type FrameGeometry } from '../geometry.js';
import type { ModelManifest } from '../manifest.js';
import {
  asNumbers,
  checkTensor,
  concrete,
  shapeError,
  type DeclaredOutput,
  type OutputTensor,
} from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import type { BatchDecoder, OutputDecoder } from './index.js';

/**
 * anomalib exports (PatchCore, PaDiM, EfficientAD, FastFlow…; docs/model-families.md, "Anomaly
 * detection"). anomalib 2.x: outputs `pred_score` [N, 1] or [N], `pred_label`, `anomaly_map`
 * [N, 1, h, w] and `pred_mask`, already normalised so that 0.5 is the trained threshold. anomalib
 * 1.x: raw scores and maps, normalised here with the thresholds and min/max of its metadata.json
 * (`output.anomalyNormalization`). The answer: the image score, `defect` when it is above the
 * threshold, the 8-connected regions of the map above the threshold (or of `pred_mask`) in frame
 * pixels, and a small copy of the map for `?include=map`.
 */
export const anomalib: OutputDecoder<'anomalib'> = {
  formats: ['anomalib'],
  task: 'anomaly',
  checkOutputs,
  create: (manifest) => new AnomalibDecoder(manifest),
};

interface Picked<T> {
  score: T;
  map: T;
  mask: T | undefined;
}

type Dims = readonly (number | string)[];
const isOne = (d: number | string | undefined): boolean => concrete(d) === undefined || d === 1;
const isMap = (dims: Dims): boolean => dims.length === 4 && isOne(dims[1]);
const isScore = (dims: Dims): boolean => dims.length === 1 || (dims.length === 2 && isOne(dims[1]));

/**
 * The score, map and mask outputs: by anomalib 2.x's names, else by shape (the first
 * [N, 1, h, w] output is the map, the first [N] or [N, 1] output the score; anomalib 1.x).
 */
function pick<T extends { name: string; dims: Dims }>(outputs: readonly T[]): Partial<Picked<T>> {
  const byName = (n: string): T | undefined => outputs.find((o) => o.name === n);
  const map = byName('anomaly_map') ?? outputs.find((o) => isMap(o.dims));
  const score = byName('pred_score') ?? outputs.find((o) => o !== map && isScore(o.dims));
  return { score, map, mask: byName('pred_mask') };
}

function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  const { score, map } = pick(outputs);
  const first = outputs[0] ?? { name: '(none)', dims: [] };
  if (!map) throw shapeError(first.name, first.dims, 'anomalib expects an anomaly_map [N, 1, h, w]');
  if (map.dims.length > 0 && !isMap(map.dims)) {
    throw shapeError(map.name, map.dims, 'anomalib expects anomaly_map [N, 1, h, w]');
  }
  if (!score) throw shapeError(first.name, first.dims, 'anomalib expects a pred_score [N] or [N, 1]');
  if (score.dims.length > 0 && !isScore(score.dims)) {
    throw shapeError(score.name, score.dims, 'anomalib expects pred_score [N] or [N, 1]');
  }
  const norm = manifest.output.anomalyNormalization;
  if (norm && !(norm.max > norm.min)) {
    throw new EdgeError(ErrorCodes.MANIFEST_INVALID, 'anomalyNormalization needs max > min');
  }
}

const clamp01 = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);

class AnomalibDecoder implements BatchDecoder {
  constructor(private readonly manifest: ModelManifest) {}

  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    const frames = geometries.length;
    const all = outputNames.map((name) => ({ name, dims: outputs[name]?.dims ?? [] }));
    const picked = pick(all);
    if (!picked.score || !picked.map) {
      throw new EdgeError(
        ErrorCodes.MODEL_SHAPE_MISMATCH,
        'anomalib outputs pred_score and anomaly_map are missing',
      );
    }
    const scoreT = checkTensor(picked.score.name, outputs[picked.score.name], frames);
    const mapT = checkTensor(picked.map.name, outputs[picked.map.name], frames);
    if (!isMap(mapT.dims) || !isScore(scoreT.dims)) {
      throw shapeError(
        picked.map.name,
        mapT.dims,
        'anomalib expects anomaly_map [N, 1, h, w] and pred_score [N] or [N, 1]',
      );
    }
    const h = mapT.dims[2]!;
    const w = mapT.dims[3]!;
    const scores = asNumbers(scoreT.data);
    const maps = asNumbers(mapT.data);
    const { output, input } = this.manifest;
    const norm = output.anomalyNormalization;
    const threshold = output.anomalyThreshold ?? 0.5;
    // The baked mask is the trained threshold's: used only when nothing changes the threshold.
    const maskT =
      picked.mask && output.anomalyThreshold === undefined && !norm
        ? checkTensor(picked.mask.name, outputs[picked.mask.name], frames)
        : undefined;
    const maskData = maskT && maskT.data.length === frames * h * w ? asNumbers(maskT.data) : undefined;
    const range = norm ? norm.max - norm.min : 1;
    const out: FramePrediction[] = [];
    for (let n = 0; n < frames; n++) {
      const raw = scores[n]!;
      const score = norm ? clamp01((raw - norm.imageThreshold) / range + 0.5) : raw;
      const values = new Float32Array(h * w);
      const mask = new Uint8Array(h * w);
      const base = n * h * w;
      for (let i = 0; i < h * w; i++) {
        const v = maps[base + i]!;
        const value = norm ? clamp01((v - norm.pixelThreshold) / range + 0.5) : v;
        values[i] = value;
        mask[i] = maskData ? (maskData[base + i]! !== 0 ? 1 : 0) : value > threshold ? 1 : 0;
      }
      const g = geometries[n]!;
      const regions = anomalyRegions(mask, values, w, h, input.width, input.height, g, output.maxDetections);
      out.push({
        // NaN is not a defect, and not a number to answer: it fails the comparison.
        defect: score > threshold,
        anomaly: {
          score,
          threshold,
          regions,
          map: { ...smallMap(values, w, h), frame: inputRectInFrame(g, input.width, input.height) },
        },
      });
    }
    return out;
  }
}
