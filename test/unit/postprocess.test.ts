import { describe, it, expect } from 'vitest';
import { EdgeError, ErrorCodes } from '../../src/errors.js';
import type { ModelManifest, OutputSpec } from '../../src/scoring/manifest.js';
import { geometryFor, type FrameGeometry } from '../../src/scoring/geometry.js';
import type { OutputTensor } from '../../src/scoring/output-shape.js';
import { checkOutputShape, postprocessBatch } from '../../src/scoring/postprocess.js';

function manifest(
  over: Partial<Omit<ModelManifest, 'output'>> & { output?: Partial<OutputSpec> } = {},
): ModelManifest {
  const { output, ...rest } = over;
  return {
    name: 'm',
    version: '1',
    task: 'classification',
    labels: [],
    defectLabels: [],
    input: {
      width: 640,
      height: 640,
      resize: 'letterbox',
      color: 'rgb',
      layout: 'nchw',
      dtype: 'float32',
      scale: 1 / 255,
      mean: [0],
      std: [1],
      padValue: 114,
    },
    ...rest,
    output: {
      format: 'probabilities',
      topK: 5,
      scoreThreshold: 0.25,
      iouThreshold: 0.45,
      maxDetections: 300,
      ...output,
    },
  };
}

/** Frame == model input: the identity map. */
const identity: FrameGeometry = {
  frameWidth: 640,
  frameHeight: 640,
  scaleX: 1,
  scaleY: 1,
  offsetX: 0,
  offsetY: 0,
};

function tensor(dims: number[], values: number[]): OutputTensor {
  return { dims, data: Float32Array.from(values) };
}

/** Builds a [1, 4 + C, B] YOLOv8 tensor from per-box rows [cx, cy, w, h, cls0, cls1, …]. */
function yolov8(rows: number[][]): OutputTensor & { data: Float32Array } {
  const boxes = rows.length;
  const channels = rows[0]!.length;
  const data = new Float32Array(channels * boxes);
  rows.forEach((row, b) => row.forEach((v, c) => (data[c * boxes + b] = v)));
  return { dims: [1, channels, boxes], data };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EdgeError);
    return (err as EdgeError).code;
  }
  return undefined;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  return '';
}

describe('geometryFor', () => {
  it('stretch resizes to the input size exactly', () => {
    const g = geometryFor('stretch', 1280, 720, 640, 640);
    expect(g).toMatchObject({
      resizeWidth: 640,
      resizeHeight: 640,
      offsetX: 0,
      offsetY: 0,
      padLeft: 0,
      cropLeft: 0,
    });
    expect(g.scaleX).toBe(0.5); // 640 / 1280
    expect(g.scaleY).toBeCloseTo(640 / 720, 12); // 0.888…
  });

  it('letterbox: hand-computed sizes and padding', () => {
    // 1280×1024 → r = min(640/1280, 640/1024) = 0.5 → 640×512, pad 128 → 64 / 64.
    expect(geometryFor('letterbox', 1280, 1024, 640, 640)).toMatchObject({
      resizeWidth: 640,
      resizeHeight: 512,
      padLeft: 0,
      padRight: 0,
      padTop: 64,
      padBottom: 64,
      scaleX: 0.5,
      scaleY: 0.5,
      offsetX: 0,
      offsetY: 64,
    });
    // 1000×700 → r = 0.64 → 640×448, pad 192 → 96 / 96.
    expect(geometryFor('letterbox', 1000, 700, 640, 640)).toMatchObject({
      resizeWidth: 640,
      resizeHeight: 448,
      padTop: 96,
      padBottom: 96,
      offsetY: 96,
    });
    // 1000×699 → r = 0.64 → 640 × round(447.36) = 447, pad 193 → floor 96 top, 97 bottom.
    expect(geometryFor('letterbox', 1000, 699, 640, 640)).toMatchObject({
      resizeHeight: 447,
      padTop: 96,
      padBottom: 97,
    });
    // 640×480 → r = 1 → 640×480, pad 160 → 80 / 80.
    expect(geometryFor('letterbox', 640, 480, 640, 640)).toMatchObject({
      resizeHeight: 480,
      padTop: 80,
      scaleY: 1,
    });
    // 333×777 → r = 640/777 → 333·r = 274.28 → 274 × 640, pad 366 → 183 / 183.
    const g = geometryFor('letterbox', 333, 777, 640, 640);
    expect(g).toMatchObject({ resizeWidth: 274, resizeHeight: 640, padLeft: 183, padRight: 183, padTop: 0 });
    // The scale is the actual ratio 274/333, not r = 640/777; the height becomes exactly 640.
    expect(g.scaleX).toBe(274 / 333);
    expect(g.scaleY).toBe(640 / 777);
  });

  it('center-crop: hand-computed sizes and crop', () => {
    // 1000×500 into 200×200 → r = max(0.2, 0.4) = 0.4 → 400×200, crop (400-200)/2 = 100 left.
    expect(geometryFor('center-crop', 1000, 500, 200, 200)).toMatchObject({
      resizeWidth: 400,
      resizeHeight: 200,
      cropLeft: 100,
      cropTop: 0,
      scaleX: 0.4,
      scaleY: 0.4,
      offsetX: -100,
      offsetY: 0,
    });
    // 1280×960 into 224×224 → r = 224/960 → 1280·r = 298.67 → 299×224, crop floor(75/2) = 37.
    expect(geometryFor('center-crop', 1280, 960, 224, 224)).toMatchObject({
      resizeWidth: 299,
      resizeHeight: 224,
      cropLeft: 37,
      offsetX: -37,
      scaleX: 299 / 1280,
    });
  });
});

describe('classification', () => {
  it('applies a softmax to logits', () => {
    // exp(0), exp(ln 3), exp(ln 6) = 1, 3, 6; sum 10 → 0.1, 0.3, 0.6.
    const m = manifest({ labels: ['a', 'b', 'c'], output: { format: 'logits', topK: 3 } });
    const [p] = postprocessBatch(m, ['out'], { out: tensor([1, 3], [0, Math.log(3), Math.log(6)]) }, [
      identity,
    ]);
    expect(p!.classification!.map((c) => c.label)).toEqual(['c', 'b', 'a']);
    const scores = p!.classification!.map((c) => c.score);
    expect(scores[0]).toBeCloseTo(0.6, 6);
    expect(scores[1]).toBeCloseTo(0.3, 6);
    expect(scores[2]).toBeCloseTo(0.1, 6);
  });

  it('softmax is numerically stable for large logits', () => {
    // [1000, 1000, 1000 + ln 2] → exp shifted by the max: 0.5, 0.5, 1; sum 2 → 0.25, 0.25, 0.5.
    const m = manifest({ output: { format: 'logits', topK: 3 } });
    const out = { out: { dims: [1, 3], data: Float64Array.from([1000, 1000, 1000 + Math.log(2)]) } };
    const [p] = postprocessBatch(m, ['out'], out, [identity]);
    expect(p!.classification!.map((c) => c.label)).toEqual(['class_2', 'class_0', 'class_1']);
    expect(p!.classification![0]!.score).toBeCloseTo(0.5, 9);
    expect(p!.classification![1]!.score).toBeCloseTo(0.25, 9);
    expect(p!.classification![2]!.score).toBeCloseTo(0.25, 9);
  });

  it('passes probabilities through, top-K by score descending', () => {
    const m = manifest({ labels: ['a', 'b', 'c', 'd'], output: { topK: 3 } });
    const [p] = postprocessBatch(m, ['out'], { out: tensor([1, 4], [0.1, 0.4, 0.2, 0.3]) }, [identity]);
    // Sorted: b .4, d .3, c .2, a .1 → top 3.
    expect(p!.classification!.map((c) => c.label)).toEqual(['b', 'd', 'c']);
    expect(p!.classification![0]!.score).toBeCloseTo(0.4, 6);
  });

  it('caps topK at the class count and breaks ties by index', () => {
    const m = manifest({ output: { topK: 10 } });
    const [p] = postprocessBatch(m, ['out'], { out: tensor([1, 4], [0.3, 0.3, 0.4, 0]) }, [identity]);
    // .4 (2), then the tie .3 (0) before .3 (1), then 0 (3); no labels → class_i.
    expect(p!.classification!.map((c) => c.label)).toEqual(['class_2', 'class_0', 'class_1', 'class_3']);
  });

  it('decides defect on the top-1 label, frame by frame', () => {
    const m = manifest({
      labels: ['ok', 'bridge', 'missing'],
      defectLabels: ['bridge', 'missing'],
      output: { topK: 2 },
    });
    const out = {
      out: tensor([3, 3], [0.9, 0.05, 0.05, /* */ 0.1, 0.8, 0.1, /* */ 0.5, 0.45, 0.05]),
    };
    const preds = postprocessBatch(m, ['out'], out, [identity, identity, identity]);
    expect(preds.map((p) => p.defect)).toEqual([false, true, false]);
    expect(preds.map((p) => p.classification![0]!.label)).toEqual(['ok', 'bridge', 'ok']);
    // Frame 2 has bridge second, which does not make it a defect.
    expect(preds[2]!.classification![1]!.label).toBe('bridge');
  });

  it('accepts [N, C, 1, 1] and [N, 1, C]', () => {
    const m = manifest({ labels: ['a', 'b'], output: { topK: 1 } });
    const a = postprocessBatch(m, ['out'], { out: tensor([2, 2, 1, 1], [0.2, 0.8, 0.7, 0.3]) }, [
      identity,
      identity,
    ]);
    expect(a.map((p) => p.classification![0]!.label)).toEqual(['b', 'a']);
    const b = postprocessBatch(m, ['out'], { out: tensor([2, 1, 2], [0.2, 0.8, 0.7, 0.3]) }, [
      identity,
      identity,
    ]);
    expect(b.map((p) => p.classification![0]!.label)).toEqual(['b', 'a']);
  });

  it('reads only the first output', () => {
    const m = manifest({ labels: ['a', 'b'], output: { topK: 1 } });
    const out = { first: tensor([1, 2], [0.1, 0.9]), second: tensor([1, 2], [0.9, 0.1]) };
    const [p] = postprocessBatch(m, ['first', 'second'], out, [identity]);
    expect(p!.classification![0]!.label).toBe('b');
    expect(p!.detections).toBeUndefined();
    expect(p!.raw).toBeUndefined();
  });
});

describe('detection', () => {
  const det = (format: 'yolov5' | 'yolov8', over: Partial<OutputSpec> = {}, labels = ['bridge', 'missing']) =>
    manifest({ task: 'detection', labels, defectLabels: ['missing'], output: { format, ...over } });

  it('yolov5: score = obj × best class', () => {
    // Rows: cx, cy, w, h, obj, cls0, cls1
    const rows = [
      [100, 100, 40, 20, 0.9, 0.8, 0.1], // 0.9 × 0.8 = 0.72, class 0
      [300, 200, 50, 50, 0.5, 0.2, 0.6], // 0.5 × 0.6 = 0.30, class 1
      [500, 500, 10, 10, 0.9, 0.2, 0.25], // 0.9 × 0.25 = 0.225 < 0.25 (cls alone would pass)
      [50, 500, 10, 10, 0.2, 1.0, 0.0], // 0.2 × 1 = 0.2 < 0.25
    ];
    const out = { out: tensor([1, 4, 7], rows.flat()) };
    const [p] = postprocessBatch(det('yolov5'), ['out'], out, [identity]);
    expect(p!.detections!.length).toBe(2);
    const [a, b] = p!.detections!;
    expect(a!.label).toBe('bridge');
    expect(a!.score).toBeCloseTo(0.72, 6);
    // cx 100, w 40 → x 80; cy 100, h 20 → y 90.
    expect(a!.box).toEqual({ x: 80, y: 90, width: 40, height: 20 });
    expect(b!.label).toBe('missing');
    expect(b!.score).toBeCloseTo(0.3, 6);
    expect(b!.box).toEqual({ x: 275, y: 175, width: 50, height: 50 });
    expect(p!.defect).toBe(true); // 'missing' is a defect label
  });

  it('yolov8: channel-first layout, score = best class', () => {
    // Per box: cx, cy, w, h, cls0, cls1 — stored as [1, 6, 3], channel k of box b at k·3 + b.
    const t = yolov8([
      [200, 300, 40, 60, 0.1, 0.6], // class 1, 0.6 → x 180, y 270
      [100, 50, 20, 10, 0.9, 0.05], // class 0, 0.9 → x 90, y 45
      [400, 400, 10, 10, 0.2, 0.1], // best 0.2 < 0.25 → dropped
    ]);
    // Data as stored: cx row, cy row, w row, h row, cls0 row, cls1 row.
    expect(Array.from(t.data.slice(0, 3))).toEqual([200, 100, 400]);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: t }, [identity]);
    expect(p!.detections!.map((d) => d.label)).toEqual(['bridge', 'missing']);
    expect(p!.detections![0]!.score).toBeCloseTo(0.9, 6);
    expect(p!.detections![0]!.box).toEqual({ x: 90, y: 45, width: 20, height: 10 });
    expect(p!.detections![1]!.score).toBeCloseTo(0.6, 6);
    expect(p!.detections![1]!.box).toEqual({ x: 180, y: 270, width: 40, height: 60 });
    expect(p!.defect).toBe(true);
  });

  it('yolov8: a large, sparse output (the usual case) gives the same hand-computed answer', () => {
    // [1, 4 + 3, 2000], every class score 0 except these; threshold 0.25.
    const rows: number[][] = Array.from({ length: 2000 }, (_, b) => [
      (b % 40) * 16 + 8,
      100,
      10,
      10,
      0,
      0,
      0,
    ]);
    rows[17] = [300, 300, 20, 20, 0.3, 0, 0.8]; // classes 0 and 2 pass; best is class 2, 0.8
    rows[1500] = [100, 200, 40, 40, 0, 0.5, 0]; // class 1, 0.5
    rows[1999] = [500, 500, 10, 10, 0.26, 0, 0]; // class 0, 0.26
    rows[5] = [50, 50, 10, 10, 0, Number.NaN, 0.1]; // NaN is never a score; 0.1 < 0.25
    const m = det('yolov8', {}, ['a', 'b', 'c']);
    const [p] = postprocessBatch(m, ['out'], { out: yolov8(rows) }, [identity]);
    expect(p!.detections!.map((d) => [d.label, d.box.x, d.box.y])).toEqual([
      ['c', 290, 290],
      ['b', 80, 180],
      ['a', 495, 495],
    ]);
    expect(p!.detections!.map((d) => d.score)).toEqual([Math.fround(0.8), 0.5, Math.fround(0.26)]);
  });

  it('yolov8: a NaN class score is ignored in a small output too', () => {
    const t = yolov8([[50, 50, 10, 10, Number.NaN, 0.7]]);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: t }, [identity]);
    expect(p!.detections!.map((d) => d.label)).toEqual(['missing']);
  });

  it('keeps a score exactly at the threshold', () => {
    const t = yolov8([[100, 100, 10, 10, 0.5, 0]]);
    const [p] = postprocessBatch(det('yolov8', { scoreThreshold: 0.5 }), ['out'], { out: t }, [identity]);
    expect(p!.detections!.length).toBe(1);
    expect(p!.defect).toBe(false); // 'bridge' is not a defect label
  });

  it('class-wise NMS: suppresses same-class overlaps, keeps different-class ones', () => {
    // Boxes as corners: A [0,0,10,10]+offset; B shifted by 1 → IoU 9/11 ≈ 0.82 > 0.45.
    const t = yolov8([
      [105, 105, 10, 10, 0.9, 0], // A class 0
      [106, 105, 10, 10, 0.8, 0], // B class 0, overlaps A → suppressed
      [106, 105, 10, 10, 0, 0.7], // C class 1, same place as B → kept
      [305, 305, 10, 10, 0.6, 0], // D class 0, far away → kept
    ]);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: t }, [identity]);
    expect(p!.detections!.map((d) => [d.label, d.box.x])).toEqual([
      ['bridge', 100],
      ['missing', 101],
      ['bridge', 300],
    ]);
  });

  it('NMS keeps a box whose IoU equals iouThreshold', () => {
    // A [0,0,10,10] and B [0,0,10,5] (+100 offset): IoU 50/100 = 0.5.
    const t = yolov8([
      [105, 105, 10, 10, 0.9, 0],
      [105, 102.5, 10, 5, 0.8, 0],
    ]);
    const at = postprocessBatch(det('yolov8', { iouThreshold: 0.5 }), ['out'], { out: t }, [identity]);
    expect(at[0]!.detections!.length).toBe(2);
    const below = postprocessBatch(det('yolov8', { iouThreshold: 0.49 }), ['out'], { out: t }, [identity]);
    expect(below[0]!.detections!.length).toBe(1);
  });

  it('caps at maxDetections, highest scores first', () => {
    const scores = [0.5, 0.9, 0.3, 0.7, 0.4];
    const t = yolov8(scores.map((s, i) => [50 + i * 100, 50, 20, 20, s, 0]));
    const [p] = postprocessBatch(det('yolov8', { maxDetections: 3 }), ['out'], { out: t }, [identity]);
    // Sorted .9 (box 1 at x 140), .7 (box 3 at x 340), .5 (box 0 at x 40).
    expect(p!.detections!.map((d) => d.box.x)).toEqual([140, 340, 40]);
  });

  it('maps letterboxed boxes back to the frame (hand-computed 1280×1024)', () => {
    // r = 0.5, offsetY = 64. Input box cx 320, cy 320, w 100, h 50 → corners (270, 295)–(370, 345)
    // → frame x = 270 / 0.5 = 540, y = (295 - 64) / 0.5 = 462, width 200, height 100.
    const g = geometryFor('letterbox', 1280, 1024, 640, 640);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: yolov8([[320, 320, 100, 50, 0.9, 0]]) }, [g]);
    expect(p!.detections![0]!.box).toEqual({ x: 540, y: 462, width: 200, height: 100 });
  });

  it('letterbox round trip is within 1 pixel for several frame sizes', () => {
    const sizes: [number, number][] = [
      [1280, 1024],
      [1000, 700],
      [640, 480],
      [333, 777],
    ];
    for (const [fw, fh] of sizes) {
      const g = geometryFor('letterbox', fw, fh, 640, 640);
      // A box in the middle of the frame and one touching the bottom-right corner.
      const boxes = [
        { x: fw * 0.3, y: fh * 0.4, width: fw * 0.2, height: fh * 0.1 },
        { x: fw * 0.75, y: fh * 0.8, width: fw * 0.25, height: fh * 0.2 },
      ];
      const rows = boxes.map((b, i) => {
        const x1 = b.x * g.scaleX + g.offsetX;
        const y1 = b.y * g.scaleY + g.offsetY;
        const x2 = (b.x + b.width) * g.scaleX + g.offsetX;
        const y2 = (b.y + b.height) * g.scaleY + g.offsetY;
        return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, i === 0 ? 0.9 : 0, i === 1 ? 0.8 : 0];
      });
      const [p] = postprocessBatch(det('yolov8'), ['out'], { out: yolov8(rows) }, [g]);
      expect(p!.detections!.length).toBe(2);
      boxes.forEach((want, i) => {
        const got = p!.detections![i]!.box;
        expect(Math.abs(got.x - want.x)).toBeLessThanOrEqual(1);
        expect(Math.abs(got.y - want.y)).toBeLessThanOrEqual(1);
        expect(Math.abs(got.width - want.width)).toBeLessThanOrEqual(1);
        expect(Math.abs(got.height - want.height)).toBeLessThanOrEqual(1);
        // At most 3 decimals in the output.
        for (const v of [got.x, got.y, got.width, got.height]) expect(Math.round(v * 1000) / 1000).toBe(v);
      });
    }
  });

  it('maps center-cropped boxes back to the frame', () => {
    // 1000×500 into 200×200: scale 0.4, offsetX -100. Input corners (50, 20)–(150, 100)
    // → frame x1 = (50 + 100) / 0.4 = 375, y1 = 20 / 0.4 = 50, x2 = 250 / 0.4 = 625, y2 = 250.
    const g = geometryFor('center-crop', 1000, 500, 200, 200);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: yolov8([[100, 60, 100, 80, 0.9, 0]]) }, [g]);
    expect(p!.detections![0]!.box).toEqual({ x: 375, y: 50, width: 250, height: 200 });
  });

  it('maps stretched boxes back to the frame', () => {
    // 1280×720 into 640×640: scaleX 0.5, scaleY 640/720. Input corners (288, 288)–(352, 352)
    // → x 576..704, y 288·720/640 = 324 .. 352·720/640 = 396 → {576, 324, 128, 72}.
    const g = geometryFor('stretch', 1280, 720, 640, 640);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: yolov8([[320, 320, 64, 64, 0.9, 0]]) }, [g]);
    expect(p!.detections![0]!.box).toEqual({ x: 576, y: 324, width: 128, height: 72 });
  });

  it('clips to the frame and drops boxes that are empty after clipping', () => {
    // Letterbox 1280×1024 (scale 0.5, offsetY 64).
    const g = geometryFor('letterbox', 1280, 1024, 640, 640);
    const t = yolov8([
      // Corners (-10, 10)–(50, 70) → frame (-20, -108)–(100, 12) → clipped (0, 0)–(100, 12).
      [20, 40, 60, 60, 0.9, 0],
      // Corners (610, 600)–(650, 620) → frame (1220, 1072)–(1300, 1112) → y clipped to 1024..1024: empty.
      [630, 610, 40, 20, 0.8, 0],
      // Entirely in the top padding: y 20..40 → frame -88..-48 → empty.
      [320, 30, 40, 20, 0.7, 0],
      // Corners (610, 300)–(650, 340) → frame (1220, 472)–(1300, 552) → x clipped to 1280: width 60.
      [630, 320, 40, 40, 0.6, 0],
    ]);
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: t }, [g]);
    expect(p!.detections!.map((d) => d.box)).toEqual([
      { x: 0, y: 0, width: 100, height: 12 },
      { x: 1220, y: 472, width: 60, height: 80 },
    ]);
  });

  it('postprocesses each frame of a batch with its own geometry', () => {
    const g1 = geometryFor('letterbox', 1280, 1024, 640, 640);
    const g2 = geometryFor('letterbox', 640, 640, 640, 640);
    // [2, 6, 1]: frame 0 box at input (320, 320, 100, 50) class 0; frame 1 the same box, class 1.
    const data = Float32Array.from([320, 320, 100, 50, 0.9, 0, /* */ 320, 320, 100, 50, 0, 0.9]);
    const preds = postprocessBatch(det('yolov8'), ['out'], { out: { dims: [2, 6, 1], data } }, [g1, g2]);
    expect(preds[0]!.detections![0]!.box).toEqual({ x: 540, y: 462, width: 200, height: 100 });
    expect(preds[0]!.defect).toBe(false);
    expect(preds[1]!.detections![0]!.box).toEqual({ x: 270, y: 295, width: 100, height: 50 });
    expect(preds[1]!.defect).toBe(true);
  });

  it('returns an empty list when nothing passes the threshold', () => {
    const [p] = postprocessBatch(det('yolov8'), ['out'], { out: yolov8([[100, 100, 10, 10, 0.1, 0.2]]) }, [
      identity,
    ]);
    expect(p).toEqual({ defect: false, detections: [] });
  });
});

describe('raw', () => {
  it('slices every output per frame, BigInt to Number', () => {
    const m = manifest({ task: 'raw', output: { format: 'raw' } });
    const outputs = {
      a: tensor([2, 3], [1, 2, 3, 4, 5, 6]),
      b: { dims: [2, 2, 1], data: BigInt64Array.from([7n, 8n, 9n, -10n]) },
    };
    const preds = postprocessBatch(m, ['a', 'b'], outputs, [identity, identity]);
    expect(preds).toEqual([
      { defect: false, raw: { a: { dims: [1, 3], data: [1, 2, 3] }, b: { dims: [1, 2, 1], data: [7, 8] } } },
      {
        defect: false,
        raw: { a: { dims: [1, 3], data: [4, 5, 6] }, b: { dims: [1, 2, 1], data: [9, -10] } },
      },
    ]);
  });
});

describe('shape mismatches', () => {
  const MISMATCH = ErrorCodes.MODEL_SHAPE_MISMATCH;
  const cls = manifest({ labels: ['a', 'b'] });

  it('classification: wrong rank or layout', () => {
    expect(
      codeOf(() => postprocessBatch(cls, ['out'], { out: tensor([1, 2, 2], [0, 0, 0, 0]) }, [identity])),
    ).toBe(MISMATCH);
    expect(codeOf(() => postprocessBatch(cls, ['out'], { out: tensor([2], [0, 0]) }, [identity]))).toBe(
      MISMATCH,
    );
    expect(
      codeOf(() => postprocessBatch(cls, ['out'], { out: tensor([1, 2, 1, 1, 1], [0, 0]) }, [identity])),
    ).toBe(MISMATCH);
  });

  it('names the output and its dims in the message', () => {
    const msg = messageOf(() =>
      postprocessBatch(cls, ['logits'], { logits: tensor([1, 2, 2], [0, 0, 0, 0]) }, [identity]),
    );
    expect(msg).toContain('logits');
    expect(msg).toContain('[1, 2, 2]');
  });

  it('data length or batch size that does not fit the dims', () => {
    expect(codeOf(() => postprocessBatch(cls, ['out'], { out: tensor([1, 3], [0, 0]) }, [identity]))).toBe(
      MISMATCH,
    );
    expect(
      codeOf(() => postprocessBatch(cls, ['out'], { out: tensor([2, 2], [0, 0, 0, 0]) }, [identity])),
    ).toBe(MISMATCH);
  });

  it('missing output', () => {
    expect(codeOf(() => postprocessBatch(cls, ['out'], {}, [identity]))).toBe(MISMATCH);
    expect(codeOf(() => postprocessBatch(cls, [], {}, [identity]))).toBe(MISMATCH);
  });

  it('detection: wrong rank or no classes', () => {
    const v8 = manifest({ task: 'detection', output: { format: 'yolov8' } });
    const v5 = manifest({ task: 'detection', output: { format: 'yolov5' } });
    expect(
      codeOf(() => postprocessBatch(v8, ['out'], { out: tensor([1, 6], [0, 0, 0, 0, 0, 0]) }, [identity])),
    ).toBe(MISMATCH);
    // yolov8 [1, 4, 2]: 4 + C with C = 0.
    expect(
      codeOf(() =>
        postprocessBatch(v8, ['out'], { out: tensor([1, 4, 2], new Array<number>(8).fill(0)) }, [identity]),
      ),
    ).toBe(MISMATCH);
    // yolov5 [1, 2, 5]: 5 + C with C = 0.
    expect(
      codeOf(() =>
        postprocessBatch(v5, ['out'], { out: tensor([1, 2, 5], new Array<number>(10).fill(0)) }, [identity]),
      ),
    ).toBe(MISMATCH);
  });

  it('raw: an output without the batch dimension', () => {
    const m = manifest({ task: 'raw', output: { format: 'raw' } });
    expect(
      codeOf(() => postprocessBatch(m, ['out'], { out: tensor([3], [1, 2, 3]) }, [identity, identity])),
    ).toBe(MISMATCH);
  });
});

describe('checkOutputShape', () => {
  const MISMATCH = ErrorCodes.MODEL_SHAPE_MISMATCH;
  const labels80 = Array.from({ length: 80 }, (_, i) => `l${i}`);

  it('classification: C must equal labels.length; symbolic dims pass', () => {
    const m = manifest({ labels: ['a', 'b', 'c', 'd'] });
    expect(() => checkOutputShape(m, 'out', ['batch', 4])).not.toThrow();
    expect(() => checkOutputShape(m, 'out', [1, 4, 1, 1])).not.toThrow();
    expect(() => checkOutputShape(m, 'out', [-1, 1, 4])).not.toThrow();
    expect(() => checkOutputShape(m, 'out', ['batch', 'classes'])).not.toThrow();
    expect(() => checkOutputShape(m, 'out', [])).not.toThrow();
    expect(codeOf(() => checkOutputShape(m, 'out', ['batch', 5]))).toBe(MISMATCH);
    expect(codeOf(() => checkOutputShape(m, 'out', [1, 2, 4]))).toBe(MISMATCH);
    expect(codeOf(() => checkOutputShape(m, 'out', [1, 4, 7, 7]))).toBe(MISMATCH);
    expect(codeOf(() => checkOutputShape(m, 'out', [4]))).toBe(MISMATCH);
    // Without labels, any class count goes.
    expect(() => checkOutputShape(manifest(), 'out', [1, 1000])).not.toThrow();
    expect(messageOf(() => checkOutputShape(m, 'probs', ['batch', 5]))).toContain("'probs'");
  });

  it('yolov8: [N, 4 + C, boxes] with C = labels.length', () => {
    const m = manifest({ task: 'detection', labels: labels80, output: { format: 'yolov8' } });
    expect(() => checkOutputShape(m, 'output0', [1, 84, 8400])).not.toThrow();
    expect(() => checkOutputShape(m, 'output0', ['batch', 84, 'anchors'])).not.toThrow();
    expect(codeOf(() => checkOutputShape(m, 'output0', [1, 85, 8400]))).toBe(MISMATCH);
    // Transposed export: [1, 8400, 84] implies 8396 classes.
    expect(codeOf(() => checkOutputShape(m, 'output0', [1, 8400, 84]))).toBe(MISMATCH);
    expect(codeOf(() => checkOutputShape(m, 'output0', [1, 84]))).toBe(MISMATCH);
    expect(
      codeOf(() =>
        checkOutputShape(manifest({ task: 'detection', output: { format: 'yolov8' } }), 'o', [1, 4, 10]),
      ),
    ).toBe(MISMATCH);
  });

  it('yolov5: [N, boxes, 5 + C] with C = labels.length', () => {
    const m = manifest({ task: 'detection', labels: labels80, output: { format: 'yolov5' } });
    expect(() => checkOutputShape(m, 'output', [1, 25200, 85])).not.toThrow();
    expect(codeOf(() => checkOutputShape(m, 'output', [1, 25200, 84]))).toBe(MISMATCH);
  });

  it('raw accepts anything', () => {
    const m = manifest({ task: 'raw', output: { format: 'raw' } });
    expect(() => checkOutputShape(m, 'out', [7])).not.toThrow();
  });
});
