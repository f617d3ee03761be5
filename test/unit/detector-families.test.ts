import { describe, expect, it } from 'vitest';
import { EdgeError, ErrorCodes } from '../../src/errors.js';
import { geometryFor } from '../../src/scoring/geometry.js';
import { manifestFromMetadata, resolveManifest, type PartialManifest } from '../../src/scoring/manifest.js';
import { checkModel } from '../../src/scoring/model-loader.js';
import { checkOutputShape, postprocessBatch } from '../../src/scoring/postprocess.js';
import { end2endRows, ultralyticsMetadata } from '../helpers/model-families.js';

/** End-to-end YOLO heads and Ultralytics RT-DETR (docs/model-families.md), answers worked by hand. */

const LABELS = ['bridge', 'missing'];

function manifest(over: PartialManifest) {
  return resolveManifest(
    [over, { labels: LABELS, defectLabels: ['missing'], input: { width: 64, height: 64 } }],
    'm',
  );
}

function shapeCode(fn: () => void): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof EdgeError ? err.code : 'not an EdgeError';
  }
  return undefined;
}

describe('yolo-end2end', () => {
  // A 128×96 frame letterboxed into 64×64: r = 0.5, resized 64×48, 8 rows of padding on top.
  const g = geometryFor('letterbox', 128, 96, 64, 64);
  const m = manifest({ task: 'detection', output: { format: 'yolo-end2end', scoreThreshold: 0.25 } });

  it('reports every row above the threshold, overlapping boxes included (no NMS), in frame pixels', () => {
    const rows = end2endRows(
      [
        [16, 18, 32, 28, 0.9, 0], // frame: x 32..64, y (18-8)/0.5 = 20 .. (28-8)/0.5 = 40
        [17, 18, 33, 28, 0.8, 0], // same class, IoU ≈ 0.89 with the first: NMS would drop it
        [40, 30, 48, 40, 0.6, 1], // frame: x 80..96, y 44..64
        [0, 8, 8, 16, 0.1, 1], // below the threshold
      ],
      6, // two zero padding rows, as nms=True exports write them
    );
    const [p] = postprocessBatch(
      m,
      ['output0'],
      { output0: { dims: [1, 6, 6], data: Float32Array.from(rows) } },
      [g],
    );
    expect(p!.detections!.map((d) => [d.label, d.box])).toEqual([
      ['bridge', { x: 32, y: 20, width: 32, height: 20 }],
      ['bridge', { x: 34, y: 20, width: 32, height: 20 }],
      ['missing', { x: 80, y: 44, width: 16, height: 20 }],
    ]);
    expect(p!.detections!.map((d) => d.score)).toEqual([0.9, 0.8, 0.6].map(Math.fround));
    expect(p!.defect).toBe(true);
  });

  it('a threshold of 0 still reports no padding row (they are empty boxes)', () => {
    const zero = manifest({ task: 'detection', output: { format: 'yolo-end2end', scoreThreshold: 0 } });
    const rows = end2endRows([[16, 18, 32, 28, 0.9, 0]], 300);
    const [p] = postprocessBatch(
      zero,
      ['output0'],
      { output0: { dims: [1, 300, 6], data: Float32Array.from(rows) } },
      [g],
    );
    expect(p!.detections).toHaveLength(1);
    expect(p!.defect).toBe(false);
  });

  it('refuses at load a head that is not [N, boxes, 6], and a raw YOLOv8 head read as end-to-end', () => {
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 300, 7]))).toBe(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
    );
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 6, 8400]))).toBe(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
    );
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 300, 6]))).toBeUndefined();
    // The other way round: an end-to-end head declared as yolov8 implies 296 classes, not 2.
    const v8 = manifest({ task: 'detection', output: { format: 'yolov8' } });
    expect(shapeCode(() => checkOutputShape(v8, 'output0', [1, 300, 6]))).toBe(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
    );
  });
});

describe('rtdetr (Ultralytics)', () => {
  // A 200×100 frame stretched to 64×64.
  const g = geometryFor('stretch', 200, 100, 64, 64);
  const m = manifest({ task: 'detection', input: { resize: 'stretch' }, output: { format: 'rtdetr' } });

  it('reads normalised cx, cy, w, h and the best per-class score of each query, no NMS', () => {
    const rows = [
      [0.5, 0.5, 0.25, 0.5, 0.2, 0.7], // frame: centre (100, 50), 50×50 → x 75, y 25; missing 0.7
      [0.5, 0.5, 0.25, 0.5, 0.6, 0.1], // the same box as bridge 0.6: kept too
      [0.1, 0.1, 0.1, 0.1, 0.1, 0.1], // below the threshold
    ].flat();
    const [p] = postprocessBatch(
      m,
      ['output0'],
      { output0: { dims: [1, 3, 6], data: Float32Array.from(rows) } },
      [g],
    );
    expect(p!.detections!.map((d) => [d.label, d.box])).toEqual([
      ['missing', { x: 75, y: 25, width: 50, height: 50 }],
      ['bridge', { x: 75, y: 25, width: 50, height: 50 }],
    ]);
    expect(p!.detections![0]!.score).toBeCloseTo(0.7, 6);
    expect(p!.defect).toBe(true);
  });

  it('refuses at load a head whose classes do not match the labels', () => {
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 300, 6]))).toBeUndefined();
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 300, 84]))).toBe(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
    );
    expect(shapeCode(() => checkOutputShape(m, 'output0', [1, 300]))).toBe(ErrorCodes.MODEL_SHAPE_MISMATCH);
  });
});

describe('Ultralytics metadata picks the detection family', () => {
  const meta = (over: Partial<Parameters<typeof ultralyticsMetadata>[0]>) =>
    manifestFromMetadata(ultralyticsMetadata({ task: 'detect', names: LABELS, imgsz: [640, 640], ...over }));

  it('end2end True (YOLO26, YOLOv10) → yolo-end2end, letterboxed', () => {
    const m = meta({ end2end: true });
    expect(m.output?.format).toBe('yolo-end2end');
    expect(m.input?.resize).toBe('letterbox');
  });
  it("args with 'nms': True (YOLOv8/11 nms=True) → yolo-end2end", () => {
    expect(meta({ end2end: false, args: "{'batch': 1, 'nms': True}" }).output?.format).toBe('yolo-end2end');
  });
  it('neither → yolov8 (raw head, NMS in the daemon)', () => {
    expect(meta({ end2end: false }).output?.format).toBe('yolov8');
    expect(meta({}).output?.format).toBe('yolov8');
  });
  it('an RT-DETR description → rtdetr, stretched', () => {
    const m = meta({ description: 'Ultralytics rtdetr-l model trained on pcb.yaml' });
    expect(m.output?.format).toBe('rtdetr');
    expect(m.input?.resize).toBe('stretch');
    expect(m.labels).toEqual(LABELS);
  });
});

describe('extra graph inputs', () => {
  const file = { modelPath: '/models/m.onnx', sha256: 'x', sizeBytes: 1, metadata: {}, sidecar: undefined };
  const images = { name: 'images', type: 'float32', dims: ['N', 3, 32, 32] };
  const outputs = [
    { name: 'labels', type: 'int64', dims: ['N', 300] },
    { name: 'boxes', type: 'float32', dims: ['N', 300, 4] },
    { name: 'scores', type: 'float32', dims: ['N', 300] },
  ];

  it('orig_target_sizes is known (lyuwenyu RT-DETR); any other second input is refused', () => {
    const ok = checkModel(
      file,
      undefined,
      [images, { name: 'orig_target_sizes', type: 'int64', dims: ['N', 2] }],
      outputs,
    );
    expect(ok.manifest.output.format).toBe('rtdetr-lyuwenyu');
    expect(ok.frameDims).toEqual([3, 32, 32]);
    expect(
      shapeCode(() =>
        checkModel(file, undefined, [images, { name: 'scale', type: 'float32', dims: ['N', 1] }], outputs),
      ),
    ).toBe(ErrorCodes.MODEL_SHAPE_MISMATCH);
  });
});
