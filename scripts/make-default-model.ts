/**
 * Builds the bundled default model (models/default): a hand-made ONNX graph that finds bright
 * solder-bridge blobs on a PCB, plus two demo frames. No training, no downloads; the output is
 * byte-for-byte the same on every run.
 *
 *   node --import tsx scripts/make-default-model.ts
 *
 * How the graph sees a bridge, at model resolution (640×640, letterboxed, pixels scaled to 0..1):
 *  1. brightness mask m = clip((min(R, G, B) - 0.85) × 20, 0, 1): only near-white (≥ ~0.9, i.e.
 *     ~230/255 in every channel) counts; tin pads (~150–185) and the green board are 0, and so is
 *     the grey letterbox padding (114);
 *  2. per cell of a 16-pixel grid (40×40 cells), a 48×48 window centred on the cell (the cell and
 *     its eight neighbours) averages m, m·x, m·y, m·x², m·y²: the bright mass M and the first and
 *     second moments of its position;
 *  3. box = the bright mass's centroid, with width/height = 4σ + 4 px (4σ is the full width of a
 *     uniform ellipse), so every window that holds the whole blob gives the same box;
 *  4. score = sigmoid(400·(M − 40/2304)) · sigmoid(500·(M − max₃ₓ₃(M) + 0.005)): at least ~40
 *     bright pixels, and only cells whose window holds (nearly) the most bright mass around them.
 *     A blob of 6–32 model pixels therefore scores ~0.92 in the cells whose window contains all
 *     of it (identical boxes, which NMS folds into one detection) and ~0 everywhere else.
 * Output: YOLOv8 layout [N, 5, 1600] (cx, cy, w, h, score), one class: solder-bridge.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { GraphBuilder, Rng } from '../test/helpers/onnx-graph.js';

export const MODEL_SIZE = 640;
export const STRIDE = 16;
export const GRID = MODEL_SIZE / STRIDE;
export const FRAME_WIDTH = 1280;
export const FRAME_HEIGHT = 1024;

const MIN_BLOB_PIXELS = 40;
const WINDOW = 3 * STRIDE;

export const defaultManifest = {
  name: 'aoi-solder-bridge-demo',
  version: '1',
  task: 'detection',
  labels: ['solder-bridge'],
  defectLabels: ['solder-bridge'],
  input: {
    width: MODEL_SIZE,
    height: MODEL_SIZE,
    resize: 'letterbox',
    color: 'rgb',
    layout: 'nchw',
    dtype: 'float32',
    scale: 1 / 255,
    padValue: 114,
  },
  output: { format: 'yolov8', scoreThreshold: 0.5, iouThreshold: 0.45 },
};

export function buildSolderBridgeModel(): Uint8Array {
  const g = new GraphBuilder();
  const s = (v: number): string => g.scalar('c', v);
  const x = g.input('input', 'float32', ['N', 3, MODEL_SIZE, MODEL_SIZE]);
  const darkest = g.node('ReduceMin', [x], { axes: [1], keepdims: 1 });
  const mask = g.node('Clip', [g.node('Mul', [g.node('Sub', [darkest, s(0.85)]), s(20)]), s(0), s(1)]);
  // Pixel-centre coordinates, generated in the graph so the model stays a few KB.
  const coords = g.node('Add', [g.node('Range', [s(0), s(MODEL_SIZE), s(1)]), s(0.5)]);
  const X = g.node('Reshape', [coords, g.ints('shape', [1, 1, 1, MODEL_SIZE])]);
  const Y = g.node('Reshape', [coords, g.ints('shape', [1, 1, MODEL_SIZE, 1])]);
  const mx = g.node('Mul', [mask, X]);
  const my = g.node('Mul', [mask, Y]);
  const stacked = g.node('Concat', [mask, mx, my, g.node('Mul', [mx, X]), g.node('Mul', [my, Y])], {
    axis: 1,
  });
  const pad = (WINDOW - STRIDE) / 2;
  const pooled = g.node('AveragePool', [stacked], {
    kernel_shape: [WINDOW, WINDOW],
    strides: [STRIDE, STRIDE],
    pads: [pad, pad, pad, pad],
    count_include_pad: 1,
  });
  const [mass, sx, sy, sxx, syy] = g.nodeMulti('Split', [pooled], 5, { axis: 1 }) as [
    string,
    string,
    string,
    string,
    string,
  ];
  const den = g.node('Add', [mass, s(1e-6)]);
  const centre = (sum: string): string => g.node('Div', [sum, den]);
  const extent = (sum2: string, c: string): string => {
    const variance = g.node('Relu', [g.node('Sub', [g.node('Div', [sum2, den]), g.node('Mul', [c, c])])]);
    return g.node('Add', [g.node('Mul', [g.node('Sqrt', [variance]), s(4)]), s(4)]);
  };
  const cx = centre(sx);
  const cy = centre(sy);
  const sigmoid = (v: string, offset: number, gain: number): string =>
    g.node('Sigmoid', [g.node('Mul', [g.node('Add', [v, s(offset)]), s(gain)])]);
  const big = sigmoid(mass, -MIN_BLOB_PIXELS / (WINDOW * WINDOW), 400);
  const neighbours = g.node('MaxPool', [mass], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] });
  const peak = sigmoid(g.node('Sub', [mass, neighbours]), 0.005, 500);
  const score = g.node('Mul', [big, peak]);
  const rows = g.node('Concat', [cx, cy, extent(sxx, cx), extent(syy, cy), score], { axis: 1 });
  g.node('Reshape', [rows, g.ints('shape', [0, 5, -1])], {}, 'output');
  g.output('output', 'float32', ['N', 5, GRID * GRID]);
  return g.build({
    graphName: 'aoi-solder-bridge-demo',
    docString: 'Hand-built demo: flags near-white solder blobs (see scripts/make-default-model.ts).',
  });
}

// ---------------------------------------------------------------------------------------------
// Demo frames: a dark-green board with IC footprints, passives, traces and silkscreen.

type Rgb = [number, number, number];
/** A bridge drawn on board-bridge.jpg: centre and semi-axes in frame pixels. */
export interface DemoBridge {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
}

class Canvas {
  readonly data = Buffer.alloc(FRAME_WIDTH * FRAME_HEIGHT * 3);
  constructor(private readonly rng: Rng) {}

  set(x: number, y: number, c: Rgb, alpha = 1): void {
    if (x < 0 || y < 0 || x >= FRAME_WIDTH || y >= FRAME_HEIGHT) return;
    const o = (y * FRAME_WIDTH + x) * 3;
    for (let k = 0; k < 3; k++)
      this.data[o + k] = Math.round(this.data[o + k]! * (1 - alpha) + c[k]! * alpha);
  }

  /** Fills a rectangle; `shade(u, v)` (u, v in 0..1 across it) and ±`noise` modulate the colour. */
  rect(
    x0: number,
    y0: number,
    w: number,
    h: number,
    c: Rgb,
    noise = 0,
    shade?: (u: number, v: number) => number,
  ): void {
    for (let y = y0; y < y0 + h; y++) {
      for (let x = x0; x < x0 + w; x++) {
        const d = (shade ? shade((x - x0) / w, (y - y0) / h) : 0) + (this.rng.next() * 2 - 1) * noise;
        this.set(x, y, [c[0] + d, c[1] + d, c[2] + d]);
      }
    }
  }

  outline(x0: number, y0: number, w: number, h: number, c: Rgb, t = 3): void {
    this.rect(x0, y0, w, t, c);
    this.rect(x0, y0 + h - t, w, t, c);
    this.rect(x0, y0, t, h, c);
    this.rect(x0 + w - t, y0, t, h, c);
  }

  /** Anti-aliased ellipse; `shade(r)` (r = 0 at the centre, 1 at the rim) adds to the colour. */
  ellipse(
    cx: number,
    cy: number,
    rx: number,
    ry: number,
    c: Rgb,
    shade: (r: number) => number = () => 0,
  ): void {
    for (let y = Math.floor(cy - ry - 2); y <= Math.ceil(cy + ry + 2); y++) {
      for (let x = Math.floor(cx - rx - 2); x <= Math.ceil(cx + rx + 2); x++) {
        const r = Math.hypot((x + 0.5 - cx) / rx, (y + 0.5 - cy) / ry);
        const alpha = Math.max(0, Math.min(1, (1 - r) * Math.min(rx, ry) + 0.5));
        if (alpha > 0) this.set(x, y, [c[0] + shade(r), c[1] + shade(r), c[2] + shade(r)], alpha);
      }
    }
  }
}

const BOARD: Rgb = [24, 82, 46];
const TRACE: Rgb = [34, 106, 60];
const TIN: Rgb = [166, 166, 160];
const SILK: Rgb = [206, 206, 196];
const BODY: Rgb = [36, 36, 40];

interface Pad {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** IC footprints: rows (vertical pads side by side) and columns (horizontal pads stacked). */
function footprints(): { pads: Pad[][]; bodies: Pad[]; silk: Pad[] } {
  const row = (x0: number, y0: number, n: number, pitch: number, w: number, h: number): Pad[] =>
    Array.from({ length: n }, (_, i) => ({ x: x0 + i * pitch, y: y0, w, h }));
  const col = (x0: number, y0: number, n: number, pitch: number, w: number, h: number): Pad[] =>
    Array.from({ length: n }, (_, i) => ({ x: x0, y: y0 + i * pitch, w, h }));
  // U1: SOIC-16 (pads 24×64, pitch 48). U2: QFP-40 (pads 18×50, pitch 36). U3: SOIC-12 turned 90°.
  const qx = 940;
  const qy = 330;
  const q0 = (c: number): number => c - 4.5 * 36 - 9;
  return {
    pads: [
      row(120, 150, 8, 48, 24, 64),
      row(120, 318, 8, 48, 24, 64),
      row(q0(qx), qy - 235, 10, 36, 18, 50),
      row(q0(qx), qy + 185, 10, 36, 18, 50),
      col(qx - 235, q0(qy), 10, 36, 50, 18),
      col(qx + 185, q0(qy), 10, 36, 50, 18),
      col(110, 560, 6, 48, 64, 24),
      col(290, 560, 6, 48, 64, 24),
    ],
    bodies: [
      { x: 108, y: 226, w: 384, h: 80 },
      { x: qx - 175, y: qy - 175, w: 350, h: 350 },
      { x: 186, y: 548, w: 92, h: 288 },
    ],
    silk: [
      { x: 94, y: 136, w: 412, h: 260 },
      { x: qx - 250, y: qy - 250, w: 500, h: 500 },
      { x: 96, y: 540, w: 272, h: 304 },
    ],
  };
}

/** The bridges of board-bridge.jpg, each spanning the gap between two neighbouring pads. */
export const DEMO_BRIDGES: DemoBridge[] = [
  // U1 top row, between pads 3 and 4 (gap x 240..264), near the pad tips.
  { cx: 252, cy: 172, rx: 28, ry: 13 },
  // U2 left side, between pads 7 and 8 (gap y 393..411).
  { cx: 726, cy: 402, rx: 12, ry: 22 },
  // U3 right column, between pads 3 and 4 (gap y 680..704).
  { cx: 322, cy: 692, rx: 13, ry: 26 },
];

/** Renders the demo board (HWC rgb8, 1280×1024); with `bridges`, draws those solder bridges. */
export function renderBoard(bridges: DemoBridge[] = []): Buffer {
  const rng = new Rng(2024);
  const cv = new Canvas(rng);
  cv.rect(0, 0, FRAME_WIDTH, FRAME_HEIGHT, BOARD, 5, (_u, v) => 8 * v);
  // Traces, fanning out from the footprints.
  for (let i = 0; i < 8; i++) cv.rect(128 + i * 48, 40, 8, 110, TRACE, 3);
  for (let i = 0; i < 6; i++) cv.rect(20, 568 + i * 48, 90, 8, TRACE, 3);
  for (let i = 0; i < 10; i++) cv.rect(1175, 171 + i * 36, 85, 8, TRACE, 3);
  cv.rect(420, 470, 8, 240, TRACE, 3);
  cv.rect(420, 470, 280, 8, TRACE, 3);
  // Passives: two rows of 0805 chips (tin pad, dark body, tin pad).
  for (let r = 0; r < 2; r++) {
    for (let i = 0; i < 5; i++) {
      const x = 560 + i * 130;
      const y = 700 + r * 130;
      cv.outline(x - 10, y - 12, 120, 64, SILK, 2);
      cv.rect(x, y, 30, 40, TIN, 3, (u) => 12 * u);
      cv.rect(x + 30, y + 4, 40, 32, [62, 48, 38], 3);
      cv.rect(x + 70, y, 30, 40, TIN, 3, (u) => 12 * (1 - u));
    }
  }
  // Vias and fiducials.
  for (let i = 0; i < 12; i++) {
    const vx = 470 + ((i * 97) % 260);
    const vy = 900 + ((i * 53) % 90);
    cv.ellipse(vx, vy, 7, 7, [150, 150, 146]);
    cv.ellipse(vx, vy, 3, 3, [18, 22, 20]);
  }
  for (const [fx, fy] of [
    [50, 50],
    [1230, 974],
    [1230, 50],
  ] as const) {
    cv.ellipse(fx, fy, 28, 28, [14, 48, 28]);
    cv.ellipse(fx, fy, 14, 14, [176, 176, 170], (r) => 8 * (1 - r));
  }
  const fp = footprints();
  for (const s of fp.silk) cv.outline(s.x, s.y, s.w, s.h, SILK);
  for (const b of fp.bodies) cv.rect(b.x, b.y, b.w, b.h, BODY, 3);
  cv.ellipse(fp.bodies[0]!.x + 16, fp.bodies[0]!.y + 16, 6, 6, [70, 70, 76]);
  for (const pads of fp.pads) {
    for (const p of pads)
      cv.rect(p.x, p.y, p.w, p.h, TIN, 4, (u, v) => 14 * Math.sin(Math.PI * (p.w > p.h ? v : u)) - 6);
  }
  // Solder bridges: near-white, shiny blobs with a soft rim.
  for (const b of bridges) cv.ellipse(b.cx, b.cy, b.rx, b.ry, [236, 236, 232], (r) => 14 * (1 - r * r));
  return cv.data;
}

async function jpeg(raw: Buffer): Promise<Buffer> {
  return sharp(raw, { raw: { width: FRAME_WIDTH, height: FRAME_HEIGHT, channels: 3 } })
    .jpeg({ quality: 90, mozjpeg: false })
    .toBuffer();
}

/** Every file of models/default, by path relative to it. */
export async function buildDefaultModelFiles(): Promise<Record<string, Uint8Array | string>> {
  return {
    'model.onnx': buildSolderBridgeModel(),
    'model.json': `${JSON.stringify(defaultManifest, null, 2)}\n`,
    'demo/board-ok.jpg': await jpeg(renderBoard()),
    'demo/board-bridge.jpg': await jpeg(renderBoard(DEMO_BRIDGES)),
  };
}

async function main(): Promise<void> {
  const dir = fileURLToPath(new URL('../models/default/', import.meta.url));
  await mkdir(`${dir}demo`, { recursive: true });
  for (const [name, bytes] of Object.entries(await buildDefaultModelFiles())) {
    await writeFile(`${dir}${name}`, bytes);
    const sha = createHash('sha256').update(bytes).digest('hex');
    console.log(`models/default/${name}  ${bytes.length} bytes  sha256 ${sha}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
