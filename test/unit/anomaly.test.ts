import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { readAnomalibMetadata } from '../../src/scoring/anomalib-metadata.js';
import { geometryFor } from '../../src/scoring/geometry.js';
import { resolveManifest, type PartialManifest } from '../../src/scoring/manifest.js';
import { checkOutputs, postprocessBatch } from '../../src/scoring/postprocess.js';
import { anomalyMap } from '../helpers/model-families.js';

/** anomalib 2.x and 1.x outputs → score, defect and regions (docs/model-families.md). */

const manifest = (output: PartialManifest['output'] = {}) =>
  resolveManifest([{ task: 'anomaly', input: { width: 32, height: 32 }, output }], 'a');

// Two blobs: A = (1,1) 0.8, (2,1) 0.9, (2,2) 0.7; B = (6,5) 0.6 and its diagonal neighbour
// (5,6) 0.55, one region under 8-connectivity; (7,0) is exactly 0.5, not above the threshold.
const MAP = anomalyMap([
  [1, 1, 0.8],
  [2, 1, 0.9],
  [2, 2, 0.7],
  [6, 5, 0.6],
  [5, 6, 0.55],
  [7, 0, 0.5],
]);
// A 64×48 frame stretched to 32×32: one map cell (4×4 input pixels) is 8×6 frame pixels.
const g = geometryFor('stretch', 64, 48, 32, 32);

function outputs(score: number, map: number[], mask = true) {
  const f = Float32Array.from(map);
  const o: Record<string, { dims: number[]; data: Float32Array | Uint8Array }> = {
    pred_score: { dims: [1, 1], data: Float32Array.of(score) },
    pred_label: { dims: [1], data: Uint8Array.of(score > 0.5 ? 1 : 0) },
    anomaly_map: { dims: [1, 1, 8, 8], data: f },
  };
  if (mask) o.pred_mask = { dims: [1, 1, 8, 8], data: Uint8Array.from(map, (v) => (v > 0.5 ? 1 : 0)) };
  return o;
}
const NAMES = ['pred_score', 'pred_label', 'anomaly_map', 'pred_mask'];

describe('anomalib 2.x', () => {
  it('score, defect and 8-connected regions with box, area and peak in frame pixels', () => {
    const [p] = postprocessBatch(manifest(), NAMES, outputs(0.73, MAP), [g]);
    expect(p!.defect).toBe(true);
    expect(p!.anomaly!.score).toBeCloseTo(0.73, 6);
    expect(p!.anomaly!.threshold).toBe(0.5);
    expect(p!.anomaly!.regions.map((r) => [r.box, r.area])).toEqual([
      [{ x: 8, y: 6, width: 16, height: 12 }, 144],
      [{ x: 40, y: 30, width: 16, height: 12 }, 96],
    ]);
    expect(p!.anomaly!.regions.map((r) => r.peak)).toEqual([Math.fround(0.9), Math.fround(0.6)]);
    expect(p!.anomaly!.map).toMatchObject({ width: 8, height: 8 });
    expect(p!.anomaly!.map!.data[1 * 8 + 2]).toBe(Math.round(Math.fround(0.9) * 255));
  });

  it('a threshold override applies to score and map, not the mask baked into the graph', () => {
    const [p] = postprocessBatch(manifest({ anomalyThreshold: 0.85 }), NAMES, outputs(0.73, MAP), [g]);
    expect(p!.defect).toBe(false);
    expect(p!.anomaly!.threshold).toBe(0.85);
    expect(p!.anomaly!.regions.map((r) => [r.box, r.area])).toEqual([
      [{ x: 16, y: 6, width: 8, height: 6 }, 48],
    ]);
  });

  it('a good board: no defect, no region', () => {
    const [p] = postprocessBatch(manifest(), NAMES, outputs(0.2, anomalyMap([])), [g]);
    expect(p!.defect).toBe(false);
    expect(p!.anomaly!.regions).toEqual([]);
  });

  it('load check: a map and a score are needed; a detector head is refused', () => {
    const code = (outs: { name: string; dims: (number | string)[] }[]) => {
      try {
        checkOutputs(manifest(), outs);
        return undefined;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    };
    expect(
      code([
        { name: 'pred_score', dims: ['N', 1] },
        { name: 'anomaly_map', dims: ['N', 1, 256, 256] },
      ]),
    ).toBeUndefined();
    expect(code([{ name: 'output0', dims: [1, 84, 8400] }])).toBe(ErrorCodes.MODEL_SHAPE_MISMATCH);
    expect(
      code([
        { name: 'pred_score', dims: [1, 1] },
        { name: 'anomaly_map', dims: [1, 3, 8, 8] },
      ]),
    ).toBe(ErrorCodes.MODEL_SHAPE_MISMATCH);
  });
});

describe('anomalib 1.x (metadata.json)', () => {
  it('reads thresholds and min/max, and normalises as clamp((x − t) / (max − min) + 0.5, 0, 1)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-anomalib-'));
    try {
      await writeFile(
        path.join(dir, 'metadata.json'),
        JSON.stringify({ task: 'segmentation', image_threshold: 12, pixel_threshold: 10, min: 2, max: 22 }),
      );
      const fragment = await readAnomalibMetadata(dir);
      expect(fragment).toEqual({
        task: 'anomaly',
        output: {
          format: 'anomalib',
          anomalyNormalization: { imageThreshold: 12, pixelThreshold: 10, min: 2, max: 22 },
        },
      });
      const m = resolveManifest([fragment!, { input: { width: 32, height: 32 } }], 'a');
      // Raw map: 18 → 0.9, 16 → 0.8, 30 → 1.5 → 1; background 2 → 0.1. Raw score 17 → 0.75.
      const raw = anomalyMap([
        [1, 1, 16],
        [2, 1, 18],
        [6, 6, 30],
      ]).map((v) => (v === 0.1 ? 2 : v));
      // Outputs named by position, as anomalib 1.x may write them: found by shape.
      const [p] = postprocessBatch(
        m,
        ['output0', 'output1'],
        {
          output0: { dims: [1, 1, 8, 8], data: Float32Array.from(raw) },
          output1: { dims: [1], data: Float32Array.of(17) },
        },
        [g],
      );
      expect(p!.anomaly!.score).toBeCloseTo(0.75, 6);
      expect(p!.defect).toBe(true);
      expect(p!.anomaly!.regions.map((r) => [r.box, r.peak])).toEqual([
        [{ x: 48, y: 36, width: 8, height: 6 }, 1],
        [{ x: 8, y: 6, width: 16, height: 6 }, expect.closeTo(0.9, 6)],
      ]);
      await writeFile(
        path.join(dir, 'metadata.json'),
        JSON.stringify({ image_threshold: 1, min: 3, max: 3 }),
      );
      await expect(readAnomalibMetadata(dir)).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_INVALID });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
