import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEMO_BRIDGES,
  FRAME_HEIGHT,
  FRAME_WIDTH,
  GRID,
  MODEL_SIZE,
  STRIDE,
  buildDefaultModelFiles,
  defaultManifest,
  type DemoBridge,
} from '../../scripts/make-default-model.js';
import { parsePartialManifest, resolveManifest } from '../../src/scoring/manifest.js';

const dir = new URL('../../models/default/', import.meta.url);
const SCALE = Math.min(MODEL_SIZE / FRAME_WIDTH, MODEL_SIZE / FRAME_HEIGHT);
const PAD_X = (MODEL_SIZE - FRAME_WIDTH * SCALE) / 2;
const PAD_Y = (MODEL_SIZE - FRAME_HEIGHT * SCALE) / 2;

/** The letterbox the manifest asks for, done independently of the daemon's own preprocessing. */
async function letterbox(jpeg: Buffer): Promise<Float32Array> {
  const { data, info } = await sharp(jpeg)
    .resize(MODEL_SIZE, MODEL_SIZE, { fit: 'contain', background: { r: 114, g: 114, b: 114 } })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).toEqual([MODEL_SIZE, MODEL_SIZE, 3]);
  const plane = MODEL_SIZE * MODEL_SIZE;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) out[c * plane + i] = data[i * 3 + c]! / 255;
  return out;
}

interface Cell {
  col: number;
  row: number;
  cx: number;
  cy: number;
  w: number;
  h: number;
  score: number;
}

/** Splits a [N, 5, cells] YOLOv8 output into per-frame cell lists. */
function cells(out: ort.Tensor, item: number): Cell[] {
  const data = out.data as Float32Array;
  const n = GRID * GRID;
  const at = (row: number, j: number): number => data[item * 5 * n + row * n + j]!;
  return Array.from({ length: n }, (_, j) => ({
    col: j % GRID,
    row: Math.floor(j / GRID),
    cx: at(0, j),
    cy: at(1, j),
    w: at(2, j),
    h: at(3, j),
    score: at(4, j),
  }));
}

/** A bridge in model-input pixels. */
const toModel = (b: DemoBridge): DemoBridge => ({
  cx: b.cx * SCALE + PAD_X,
  cy: b.cy * SCALE + PAD_Y,
  rx: b.rx * SCALE,
  ry: b.ry * SCALE,
});
const bridges = DEMO_BRIDGES.map(toModel);
const cellOf = (v: number): number => Math.floor(v / STRIDE);
const near = (c: Cell, b: DemoBridge): boolean =>
  Math.abs(c.col - cellOf(b.cx)) <= 1 && Math.abs(c.row - cellOf(b.cy)) <= 1;

describe('bundled default model (models/default)', () => {
  let session: ort.InferenceSession;
  let ok: Cell[];
  let bridge: Cell[];

  beforeAll(async () => {
    session = await ort.InferenceSession.create(await readFile(new URL('model.onnx', dir)));
    const frames = await Promise.all(
      ['demo/board-ok.jpg', 'demo/board-bridge.jpg'].map(async (f) =>
        letterbox(await readFile(new URL(f, dir))),
      ),
    );
    const batch = new Float32Array(2 * frames[0]!.length);
    batch.set(frames[0]!, 0);
    batch.set(frames[1]!, frames[0]!.length);
    const { output } = await session.run({
      input: new ort.Tensor('float32', batch, [2, 3, MODEL_SIZE, MODEL_SIZE]),
    });
    expect(output!.dims).toEqual([2, 5, GRID * GRID]);
    ok = cells(output!, 0);
    bridge = cells(output!, 1);
  });

  afterAll(async () => {
    await session?.release();
  });

  it('is what the script builds (outputs committed and up to date)', async () => {
    const files = await buildDefaultModelFiles();
    for (const [name, bytes] of Object.entries(files)) {
      const onDisk = await readFile(new URL(name, dir));
      expect(Buffer.compare(onDisk, Buffer.from(bytes)), name).toBe(0);
    }
    expect(files['model.onnx']!.length).toBeLessThan(8 * 1024);
  });

  it('has a manifest the daemon accepts, describing a dynamic-batch YOLOv8 graph', async () => {
    const json: unknown = JSON.parse(await readFile(new URL('model.json', dir), 'utf8'));
    expect(json).toEqual(JSON.parse(JSON.stringify(defaultManifest)));
    const manifest = resolveManifest([parsePartialManifest(json, 'model.json')], 'default');
    expect(manifest).toMatchObject({ task: 'detection', output: { format: 'yolov8' } });
    expect(session.inputNames).toEqual(['input']);
    expect(session.outputNames).toEqual(['output']);
    const input = session.inputMetadata[0];
    expect(input?.isTensor && input.shape).toEqual(['N', 3, MODEL_SIZE, MODEL_SIZE]);
    const output = session.outputMetadata[0];
    expect(output?.isTensor && output.shape).toEqual(['N', 5, GRID * GRID]);
  });

  it('finds nothing on the clean board', () => {
    expect(Math.max(...ok.map((c) => c.score))).toBeLessThan(0.1);
  });

  it('flags each drawn bridge, within one cell of it, and nothing else', () => {
    for (const b of bridges) {
      const hits = bridge.filter((c) => near(c, b) && c.score > 0.5);
      expect(hits.length, `bridge at ${b.cx},${b.cy}`).toBeGreaterThan(0);
      const best = hits.reduce((a, c) => (c.score > a.score ? c : a));
      expect(best.score).toBeGreaterThan(0.8);
      // The box is the blob's centroid and about its size.
      expect(Math.abs(best.cx - b.cx)).toBeLessThan(2);
      expect(Math.abs(best.cy - b.cy)).toBeLessThan(2);
      expect(best.w / (2 * b.rx)).toBeGreaterThan(0.8);
      expect(best.w / (2 * b.rx)).toBeLessThan(1.6);
      expect(best.h / (2 * b.ry)).toBeGreaterThan(0.8);
      expect(best.h / (2 * b.ry)).toBeLessThan(1.6);
    }
    const elsewhere = bridge.filter((c) => !bridges.some((b) => near(c, b)));
    expect(Math.max(...elsewhere.map((c) => c.score))).toBeLessThan(0.1);
  });

  it('gives one box per bridge once boxes above threshold are merged (IoU > 0.45)', () => {
    const iou = (a: Cell, b: Cell): number => {
      const ix = Math.max(
        0,
        Math.min(a.cx + a.w / 2, b.cx + b.w / 2) - Math.max(a.cx - a.w / 2, b.cx - b.w / 2),
      );
      const iy = Math.max(
        0,
        Math.min(a.cy + a.h / 2, b.cy + b.h / 2) - Math.max(a.cy - a.h / 2, b.cy - b.h / 2),
      );
      return (ix * iy) / (a.w * a.h + b.w * b.h - ix * iy);
    };
    const kept: Cell[] = [];
    for (const c of bridge.filter((x) => x.score > 0.5).sort((a, b) => b.score - a.score)) {
      if (!kept.some((k) => iou(k, c) > 0.45)) kept.push(c);
    }
    expect(kept).toHaveLength(DEMO_BRIDGES.length);
  });
});
