import { describe, expect, it } from 'vitest';
import { EdgeError, ErrorCodes } from '../../src/errors.js';
import { geometryFor } from '../../src/scoring/geometry.js';
import { manifestFromMetadata, resolveManifest, type PartialManifest } from '../../src/scoring/manifest.js';
import { checkOutputShape, postprocessBatch } from '../../src/scoring/postprocess.js';
import { probiou } from '../../src/scoring/rotated.js';
import { ultralyticsMetadata } from '../helpers/model-families.js';

/** YOLO-OBB rotated boxes (docs/model-families.md, "Oriented boxes"), worked by hand. */

const LABELS = ['chip', 'resistor'];
const manifest = (output: PartialManifest['output']) =>
  resolveManifest(
    [
      {
        task: 'detection',
        labels: LABELS,
        defectLabels: ['resistor'],
        input: { width: 64, height: 64 },
        output,
      },
    ],
    'o',
  );
// 128×96 letterboxed into 64×64: r = 0.5, 8 rows of padding on top.
const g = geometryFor('letterbox', 128, 96, 64, 64);

describe('yolo-obb-end2end (YOLO26)', () => {
  it('rotated box, corners and bounding box in frame pixels; short-side-first boxes regularised', () => {
    const rows = [
      [32, 28, 20, 10, 0.9, 1, Math.PI / 6],
      [16, 20, 4, 8, 0.8, 0, 0], // w < h: becomes 8 × 4 at π/2
      [16, 20, 4, 8, 0.1, 0, 0], // below the threshold
    ].flat();
    const [p] = postprocessBatch(
      manifest({ format: 'yolo-obb-end2end' }),
      ['output0'],
      { output0: { dims: [1, 3, 7], data: Float64Array.from(rows) } },
      [g],
    );
    const [a, b] = p!.detections!;
    expect(p!.detections).toHaveLength(2);
    expect(p!.defect).toBe(true);
    expect(a!.label).toBe('resistor');
    // Centre (32, 28) → (64, 40); sides ×2; angle unchanged.
    expect(a!.rotatedBox).toEqual({
      cx: 64,
      cy: 40,
      width: 40,
      height: 20,
      angle: Math.round((Math.PI / 6) * 1e6) / 1e6,
    });
    // First corner: centre + (20, 10) rotated by 30°: (64 + 17.3205 − 5, 40 + 10 + 8.6603).
    expect(a!.corners![0]).toEqual([76.321, 58.66]);
    expect(a!.corners![2]).toEqual([51.679, 21.34]);
    // Bounding box of the corners: x 64 ± (17.3205 + 5), y 40 ± (10 + 8.6603).
    expect(a!.box).toEqual({ x: 41.679, y: 21.34, width: 44.641, height: 37.321 });
    expect(b!.rotatedBox).toEqual({ cx: 32, cy: 24, width: 16, height: 8, angle: 1.570796 });
    expect(b!.box).toEqual({ x: 28, y: 16, width: 8, height: 16 });
  });

  it('refuses at load a head that is not [N, boxes, 7]', () => {
    const code = (dims: number[]) => {
      try {
        checkOutputShape(manifest({ format: 'yolo-obb-end2end' }), 'output0', dims);
      } catch (err) {
        return err instanceof EdgeError ? err.code : 'other';
      }
      return undefined;
    };
    expect(code([1, 300, 7])).toBeUndefined();
    expect(code([1, 300, 6])).toBe(ErrorCodes.MODEL_SHAPE_MISMATCH);
  });
});

describe('yolo-obb (raw head, rotated NMS)', () => {
  it('[N, 4 + C + 1, boxes]: suppresses a same-class duplicate, keeps another class on the same spot', () => {
    const boxes = [
      // cx, cy, w, h, chip, resistor, angle
      [32, 32, 20, 10, 0.9, 0.1, 0.3],
      [32, 32, 20, 10, 0.8, 0.1, 0.32], // the same chip, slightly turned: ProbIoU ≈ 1, suppressed
      [32, 32, 20, 10, 0.1, 0.7, 0.3], // a resistor there: another class, kept
      [50, 50, 6, 6, 0.2, 0.2, 0], // below the threshold
    ];
    const fields = 7;
    const data = new Float32Array(fields * boxes.length);
    boxes.forEach((b, j) => b.forEach((v, k) => (data[k * boxes.length + j] = v)));
    const m = manifest({ format: 'yolo-obb', iouThreshold: 0.7 });
    const [p] = postprocessBatch(m, ['output0'], { output0: { dims: [1, fields, boxes.length], data } }, [g]);
    expect(p!.detections!.map((d) => [d.label, d.score])).toEqual([
      ['chip', Math.fround(0.9)],
      ['resistor', Math.fround(0.7)],
    ]);
    expect(() => checkOutputShape(m, 'output0', [1, 8, 8400])).toThrow(EdgeError);
    expect(() => checkOutputShape(m, 'output0', [1, 7, 8400])).not.toThrow();
  });

  it('ProbIoU: 1 for the same box, near 0 far apart, symmetric', () => {
    const a = { cx: 0, cy: 0, w: 20, h: 10, angle: 0.3, score: 1, cls: 0 };
    const b = { ...a, cx: 100 };
    expect(probiou(a, a)).toBeCloseTo(1, 3);
    expect(probiou(a, b)).toBeLessThan(1e-3);
    const c = { ...a, cx: 5, angle: 1 };
    expect(probiou(a, c)).toBeCloseTo(probiou(c, a), 9);
  });

  it('Ultralytics metadata task obb → yolo-obb, with end2end → yolo-obb-end2end', () => {
    const meta = (end2end: boolean) =>
      manifestFromMetadata(ultralyticsMetadata({ task: 'obb', names: LABELS, imgsz: [64, 64], end2end }));
    expect(meta(false)).toMatchObject({ task: 'detection', output: { format: 'yolo-obb' } });
    expect(meta(true)).toMatchObject({ task: 'detection', output: { format: 'yolo-obb-end2end' } });
  });
});
