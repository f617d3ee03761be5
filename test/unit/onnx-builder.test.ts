import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readBmp } from '../../src/scoring/bmp.js';
import { encodeFrame, gradientFrame, pngBomb, solidFrame, svgFrame, toBgr } from '../helpers/frames.js';
import {
  buildClassifier,
  buildIdentityModel,
  buildResNetLike,
  buildSlowModel,
  buildWrongShapeModel,
  buildYoloV5Detector,
  buildYoloV8Detector,
  corruptModel,
  expectedClassifierOutput,
  writeModelDir,
  type ClassifierOptions,
} from '../helpers/onnx-builder.js';
import { Rng } from '../helpers/onnx-graph.js';

const { onnx } = onnxProto;

async function open(model: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
}

function shapes(meta: readonly ort.InferenceSession.ValueMetadata[]): (readonly (number | string)[])[] {
  return meta.map((m) => (m.isTensor ? m.shape : []));
}

async function run(model: Uint8Array, input: ort.Tensor): Promise<ort.Tensor> {
  const session = await open(model);
  try {
    const { output } = await session.run({ input });
    return output!;
  } finally {
    await session.release();
  }
}

function randomTensor(type: 'float32' | 'uint8', dims: number[], seed = 1): ort.Tensor {
  const rng = new Rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const data =
    type === 'uint8'
      ? Uint8Array.from({ length: n }, () => Math.floor(rng.next() * 256))
      : Float32Array.from({ length: n }, () => rng.next());
  return new ort.Tensor(type, data, dims);
}

describe('buildClassifier', () => {
  const cases: Omit<ClassifierOptions, 'batch'>[] = [
    { channels: 3, height: 8, width: 6, classes: 4 },
    { channels: 1, height: 5, width: 7, classes: 2, output: 'logits' },
    { channels: 3, height: 4, width: 4, classes: 3, layout: 'nhwc', dtype: 'uint8' },
    {
      channels: 3,
      height: 4,
      width: 5,
      classes: 2,
      weights: [
        [1, -1],
        [0.5, 2],
        [-3, 0],
      ],
      bias: [0.1, -0.2],
    },
  ];
  for (const o of cases) {
    it(`matches expectedClassifierOutput (${JSON.stringify(o)})`, async () => {
      const item = o.layout === 'nhwc' ? [o.height, o.width, o.channels] : [o.channels, o.height, o.width];
      const model = buildClassifier({ ...o, batch: 'dynamic' });
      const session = await open(model);
      expect(session.inputNames).toEqual(['input']);
      expect(session.outputNames).toEqual(['output']);
      expect(shapes(session.inputMetadata)).toEqual([['N', ...item]]);
      expect(shapes(session.outputMetadata)).toEqual([['N', o.classes]]);
      expect(session.inputMetadata[0]).toMatchObject({ type: o.dtype ?? 'float32' });
      for (const n of [1, 3]) {
        const input = randomTensor(o.dtype ?? 'float32', [n, ...item], n);
        const { output } = await session.run({ input });
        expect(output!.dims).toEqual([n, o.classes]);
        const size = item.reduce((a, b) => a * b, 1);
        for (let i = 0; i < n; i++) {
          const expected = expectedClassifierOutput(
            Array.from(input.data as ArrayLike<number>).slice(i * size, (i + 1) * size),
            o,
          );
          const got = Array.from(output!.data as Float32Array).slice(i * o.classes, (i + 1) * o.classes);
          got.forEach((v, k) =>
            expect(Math.abs(v - expected[k]!)).toBeLessThan(1e-5 * Math.max(1, Math.abs(expected[k]!))),
          );
        }
      }
      await session.release();
    });
  }

  it('by default picks the class whose centre k/(classes-1) is nearest the mean input', async () => {
    const model = buildClassifier({ batch: 4, channels: 3, height: 2, width: 2, classes: 3 });
    const plane = 3 * 2 * 2;
    const data = new Float32Array(4 * plane);
    [0, 0.5, 1, 0.8].forEach((v, i) => data.fill(v, i * plane, (i + 1) * plane));
    const out = await run(model, new ort.Tensor('float32', data, [4, 3, 2, 2]));
    const argmax = [0, 1, 2, 3].map((i) => {
      const p = Array.from(out.data as Float32Array).slice(i * 3, i * 3 + 3);
      return p.indexOf(Math.max(...p));
    });
    expect(argmax).toEqual([0, 1, 2, 2]);
    expect((out.data as Float32Array)[0]).toBeGreaterThan(0.9);
  });

  it('fixes the batch when asked and carries metadata_props', async () => {
    const model = buildClassifier({
      batch: 2,
      channels: 1,
      height: 3,
      width: 3,
      classes: 2,
      metadata: { names: "{0: 'ok', 1: 'bridge'}", imgsz: '[3, 3]' },
    });
    const session = await open(model);
    expect(shapes(session.inputMetadata)).toEqual([[2, 1, 3, 3]]);
    await session.release();
    const props = onnx.ModelProto.decode(model).metadataProps.map((p) => [p.key, p.value]);
    expect(props).toEqual([
      ['names', "{0: 'ok', 1: 'bridge'}"],
      ['imgsz', '[3, 3]'],
    ]);
  });
});

describe('buildIdentityModel', () => {
  for (const dtype of ['float32', 'uint8'] as const) {
    it(`returns its ${dtype} input unchanged`, async () => {
      const model = buildIdentityModel({ batch: 'dynamic', dims: [3, 5, 4], dtype });
      const session = await open(model);
      expect(shapes(session.inputMetadata)).toEqual([['N', 3, 5, 4]]);
      expect(shapes(session.outputMetadata)).toEqual([['N', 3, 5, 4]]);
      for (const n of [1, 3]) {
        const input = randomTensor(dtype, [n, 3, 5, 4], n);
        const { output } = await session.run({ input });
        expect(output!.type).toBe(dtype);
        expect(output!.dims).toEqual([n, 3, 5, 4]);
        expect(Array.from(output!.data as ArrayLike<number>)).toEqual(
          Array.from(input.data as ArrayLike<number>),
        );
      }
      await session.release();
    });
  }
});

describe('YOLO detectors', () => {
  const predictions = [
    { cx: 100, cy: 50, w: 40, h: 20, obj: 0.9, scores: [0.8, 0.1] },
    { cx: 10.5, cy: 200, w: 8, h: 16, obj: 0.3, scores: [0.05, 0.7] },
    { cx: 320, cy: 320, w: 64, h: 64, obj: 0.01, scores: [0.5, 0.5] },
  ];
  const base = { height: 256, width: 320, classes: 2, predictions };

  it('YOLOv8 emits [N, 4+C, boxes] with the constants, once per batch item', async () => {
    const session = await open(buildYoloV8Detector({ ...base, batch: 'dynamic' }));
    expect(shapes(session.inputMetadata)).toEqual([['N', 3, 256, 320]]);
    expect(shapes(session.outputMetadata)).toEqual([['N', 6, 3]]);
    const expected = [0, 1, 2, 3, 4, 5].flatMap((row) =>
      predictions.map((p) => [p.cx, p.cy, p.w, p.h, ...p.scores][row]!),
    );
    for (const n of [1, 3]) {
      const { output } = await session.run({ input: randomTensor('float32', [n, 3, 256, 320], n) });
      expect(output!.dims).toEqual([n, 6, 3]);
      expect(Array.from(output!.data as Float32Array)).toEqual(
        Array.from({ length: n }, () => expected)
          .flat()
          .map(Math.fround),
      );
    }
    await session.release();
  });

  it('YOLOv5 emits [N, boxes, 5+C] with the constants, once per batch item', async () => {
    const session = await open(buildYoloV5Detector({ ...base, batch: 'dynamic' }));
    expect(shapes(session.outputMetadata)).toEqual([['N', 3, 7]]);
    const expected = predictions.flatMap((p) => [p.cx, p.cy, p.w, p.h, p.obj, ...p.scores]);
    for (const n of [1, 3]) {
      const { output } = await session.run({ input: randomTensor('float32', [n, 3, 256, 320], n) });
      expect(output!.dims).toEqual([n, 3, 7]);
      expect(Array.from(output!.data as Float32Array)).toEqual(
        Array.from({ length: n }, () => expected)
          .flat()
          .map(Math.fround),
      );
    }
    await session.release();
  });

  it('works with a fixed batch too', async () => {
    const out = await run(
      buildYoloV8Detector({ ...base, batch: 1 }),
      randomTensor('float32', [1, 3, 256, 320]),
    );
    expect(out.dims).toEqual([1, 6, 3]);
  });
});

describe('cost models', () => {
  it('buildSlowModel gives [N, 2] probabilities', async () => {
    const session = await open(buildSlowModel({ batch: 'dynamic', size: 64, depth: 2 }));
    expect(shapes(session.inputMetadata)).toEqual([['N', 3, 64, 64]]);
    const { output } = await session.run({ input: randomTensor('float32', [2, 3, 64, 64]) });
    expect(output!.dims).toEqual([2, 2]);
    const p = Array.from(output!.data as Float32Array);
    expect(p[0]! + p[1]!).toBeCloseTo(1, 5);
    await session.release();
  });

  it('buildResNetLike gives finite, input-dependent, non-degenerate probabilities', async () => {
    const session = await open(buildResNetLike({ batch: 'dynamic', width: 16 }));
    expect(shapes(session.inputMetadata)).toEqual([['N', 3, 224, 224]]);
    expect(shapes(session.outputMetadata)).toEqual([['N', 4]]);
    const { output } = await session.run({ input: randomTensor('float32', [2, 3, 224, 224], 5) });
    expect(output!.dims).toEqual([2, 4]);
    const p = Array.from(output!.data as Float32Array);
    expect(p.every(Number.isFinite)).toBe(true);
    expect(p.slice(0, 4).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    expect(Math.max(...p)).toBeLessThan(0.9999);
    expect(p.slice(0, 4)).not.toEqual(p.slice(4));
    await session.release();
  });

  it('buildResNetLike is deterministic per seed and loads with a fixed batch of 1', async () => {
    const a = buildResNetLike({ batch: 1, width: 8, classes: 3, seed: 3 });
    expect(
      Buffer.compare(
        Buffer.from(a),
        Buffer.from(buildResNetLike({ batch: 1, width: 8, classes: 3, seed: 3 })),
      ),
    ).toBe(0);
    const out = await run(a, randomTensor('float32', [1, 3, 224, 224]));
    expect(out.dims).toEqual([1, 3]);
  });
});

describe('broken models', () => {
  it('buildWrongShapeModel: a rank-3 input classifier, or a rank-4 output', async () => {
    const rank3 = await open(buildWrongShapeModel());
    expect(shapes(rank3.inputMetadata)).toEqual([['N', 32, 32]]);
    expect(shapes(rank3.outputMetadata)).toEqual([['N', 2]]);
    await rank3.release();
    const rank4 = await open(buildWrongShapeModel({ kind: 'output-rank' }));
    expect(shapes(rank4.inputMetadata)).toEqual([['N', 3, 32, 32]]);
    expect(shapes(rank4.outputMetadata)).toEqual([['N', 3, 1, 1]]);
    await rank4.release();
  });

  it('corruptModel is refused by onnxruntime', async () => {
    const valid = buildClassifier({ batch: 1, channels: 3, height: 4, width: 4, classes: 2 });
    await expect(open(corruptModel(valid))).rejects.toThrow();
    await expect(open(corruptModel(buildResNetLike({ batch: 1, width: 8 })))).rejects.toThrow();
  });
});

describe('writeModelDir', () => {
  it('writes model.onnx and, when given, model.json', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edge-scorer-'));
    try {
      const model = buildIdentityModel({ batch: 1, dims: [2] });
      const { modelPath } = await writeModelDir(join(dir, 'a'), model, { name: 'x', version: '1' });
      expect(modelPath).toBe(join(dir, 'a', 'model.onnx'));
      expect(Buffer.compare(await readFile(modelPath), Buffer.from(model))).toBe(0);
      expect(JSON.parse(await readFile(join(dir, 'a', 'model.json'), 'utf8'))).toEqual({
        name: 'x',
        version: '1',
      });
      await writeModelDir(join(dir, 'b'), model);
      await expect(readFile(join(dir, 'b', 'model.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('frame helpers', () => {
  it('encodes every format so that it decodes back to the same pixels', async () => {
    const raw = gradientFrame(33, 17, 3);
    for (const format of ['png', 'tiff', 'webp'] as const) {
      const { data, info } = await sharp(await encodeFrame(raw, 33, 17, 3, format, { lossless: true }))
        .raw()
        .toBuffer({ resolveWithObject: true });
      expect([format, info.width, info.height, info.channels]).toEqual([format, 33, 17, 3]);
      expect(Buffer.compare(data, raw), format).toBe(0);
    }
    const jpeg = await encodeFrame(solidFrame(16, 16, 1, 200), 16, 16, 1, 'jpeg');
    expect((await sharp(jpeg).metadata()).format).toBe('jpeg');
    const bmp = readBmp(await encodeFrame(raw, 33, 17, 3, 'bmp'), 1e6);
    expect(bmp).toMatchObject({ width: 33, height: 17, channels: 3, order: 'bgr', bottomUp: true });
    const topDown = Buffer.concat(
      Array.from({ length: 17 }, (_, y) => bmp.data.subarray((16 - y) * 99, (17 - y) * 99)),
    );
    expect(Buffer.compare(topDown, toBgr(raw))).toBe(0);
  });

  it('svgFrame is an SVG document', () => {
    expect(svgFrame().toString('utf8')).toMatch(/^<\?xml[^>]*>\s*<svg /);
  });

  it('pngBomb is a small, valid PNG that claims a huge size', async () => {
    const bomb = pngBomb();
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(await sharp(bomb, { limitInputPixels: false }).metadata()).toMatchObject({
      format: 'png',
      width: 20000,
      height: 20000,
    });
    await expect(sharp(bomb).raw().toBuffer()).rejects.toThrow(/pixel limit/);
    // The same construction, small enough to inflate here, decodes to all-black pixels.
    const { data, info } = await sharp(pngBomb(3000, 900, { bitDepth: 8 }), { limitInputPixels: false })
      .greyscale()
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([3000, 900]);
    expect(data.every((v) => v === 0)).toBe(true);
  });
});
