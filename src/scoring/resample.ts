import { kernelArena } from './kernels.js';

/**
 * Pixels already in memory (a raw frame, a BMP, a small decoded PNG), HWC uint8. `channels` 4 is
 * read as three colours and an ignored fourth byte (BMP's BGRX; alpha-carrying PNGs never get here).
 */
export interface PixelSource {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  /** Rows are stored bottom-up (a BMP's default); read them flipped. */
  bottomUp?: boolean;
  /**
   * A window into larger pixels (a region of a decoded board): where its first pixel is in `data`
   * and the bytes from one row to the next. Default: the pixels start at 0, rows are packed.
   */
  offset?: number;
  stride?: number;
}

/** Where the resized frame goes in the model input (the fields of the frame's resize geometry). */
export interface Placement {
  resizeWidth: number;
  resizeHeight: number;
  padLeft: number;
  padTop: number;
  padRight: number;
  padBottom: number;
  cropLeft: number;
  cropTop: number;
}

/** A resampling plan for one axis: for each output sample, its source indices and weights. */
export interface AxisPlan {
  taps: number;
  /** [out × taps] source indices, clamped to the edge (libvips extends edges by copying). */
  index: Int32Array;
  /** [out × taps] weights in 1/2^14, each row summing to exactly 2^14. */
  weights: Int32Array;
  /** The colour pass's form of it, made on first use (windowedPlan). */
  windowed?: { inC: number; span: number; starts: Int32Array; pairs: Int32Array };
}

const lanczos3 = (x: number): number => {
  if (x === 0) return 1;
  if (x <= -3 || x >= 3) return 0;
  const px = Math.PI * x;
  return (3 * Math.sin(px) * Math.sin(px / 3)) / (px * px);
};

/** Catmull-Rom (a = -0.5), libvips' bicubic interpolator. */
const cubic = (x: number): number => {
  const a = Math.abs(x);
  if (a < 1) return 1.5 * a * a * a - 2.5 * a * a + 1;
  if (a < 2) return -0.5 * a * a * a + 2.5 * a * a - 4 * a + 2;
  return 0;
};

/** One output sample: source indices (clamped to the edge, as libvips extends edges) and weights. */
type Row = Map<number, number>;

/** Lanczos-3 widened by the factor s = in/out, centred at (i + 0.5)·s − 0.5: libvips' reduce. */
function reduceRows(inSize: number, outSize: number): Row[] {
  const s = inSize / outSize;
  const support = 3 * s;
  return Array.from({ length: outSize }, (_, i) => {
    const centre = (i + 0.5) * s - 0.5;
    const row: Row = new Map();
    for (let at = Math.floor(centre - support) + 1; at < centre + support; at++) {
      const w = lanczos3((at - centre) / s);
      const k = Math.min(inSize - 1, Math.max(0, at));
      row.set(k, (row.get(k) ?? 0) + w);
    }
    return row;
  });
}

/** Catmull-Rom at i·s − 0.5 (s = in/out): libvips' affine with its bicubic interpolator. */
function affineRows(inSize: number, outSize: number): Row[] {
  const s = inSize / outSize;
  return Array.from({ length: outSize }, (_, i) => {
    const centre = i * s - 0.5;
    const row: Row = new Map();
    for (let at = Math.floor(centre) - 1; at <= Math.floor(centre) + 2; at++) {
      const k = Math.min(inSize - 1, Math.max(0, at));
      row.set(k, (row.get(k) ?? 0) + cubic(at - centre));
    }
    return row;
  });
}

/** The rows of `outer` applied after `inner`: one linear map (libvips rounds to uchar between). */
function compose(outer: Row[], inner: Row[]): Row[] {
  return outer.map((row) => {
    const out: Row = new Map();
    for (const [mid, w] of row) for (const [k, v] of inner[mid]!) out.set(k, (out.get(k) ?? 0) + w * v);
    return out;
  });
}

function toPlan(rows: Row[]): AxisPlan {
  const taps = Math.max(...rows.map((r) => r.size));
  const index = new Int32Array(rows.length * taps);
  const weights = new Int32Array(rows.length * taps);
  rows.forEach((row, i) => {
    let total = 0;
    for (const w of row.values()) total += w;
    let t = 0;
    let sum = 0;
    let largest = i * taps;
    for (const [k, w] of row) {
      const at = i * taps + t++;
      index[at] = k;
      weights[at] = Math.round((w / total) * ONE);
      sum += weights[at];
      if (weights[at] > weights[largest]!) largest = at;
    }
    // Rounding must not change a flat area's level: the row sums to exactly one.
    weights[largest]! += ONE - sum;
  });
  // The vertical pass multiplies in 16 bits; no Lanczos-3 or Catmull-Rom weight comes near 2.
  if (weights.some((w) => w > 32767 || w < -32768)) throw new Error('resample weight outside 16 bits');
  return { taps, index, weights };
}

/**
 * Resampling as sharp's default resize (libvips 8.18, kernel lanczos3) does it, worked out by
 * measuring it: each axis that shrinks goes through reduce (Lanczos-3 widened by the factor,
 * centred samples); then, when either axis grows, libvips' affine with the bicubic interpolator
 * runs over both axes at i·s − 0.5, so an axis that did not grow is still shifted by half a pixel
 * and softened. Reproducing that keeps the JS path's tensors close to what sharp gave (the
 * differences left are measured in test/unit/preprocess.test.ts).
 */
function planAxis(inSize: number, outSize: number, enlarging: boolean): AxisPlan | undefined {
  if (!enlarging) return inSize === outSize ? undefined : toPlan(reduceRows(inSize, outSize));
  if (inSize <= outSize) return toPlan(affineRows(inSize, outSize));
  return toPlan(compose(affineRows(outSize, outSize), reduceRows(inSize, outSize)));
}

/**
 * Plans depend only on the sizes, and a line sends the same sizes frame after frame: keep the
 * last few so a frame pays for its pixels only.
 */
const PLAN_CACHE_SIZE = 16;
const plans = new Map<string, AxisPlan | undefined>();

/** An axis's plan (undefined: the size does not change); exported for the kernels' tests. */
export function planFor(
  inSize: number,
  outSize: number,
  enlarging: boolean,
  axis: 'x' | 'y',
): Readonly<AxisPlan> | undefined {
  const key = `${axis}:${inSize}:${outSize}:${enlarging}`;
  if (plans.has(key)) return plans.get(key);
  const plan = planAxis(inSize, outSize, enlarging);
  if (plans.size >= PLAN_CACHE_SIZE) plans.delete(plans.keys().next().value!);
  plans.set(key, plan);
  return plan;
}

/** Fixed point: weights in 1/2^14, so 12 taps of 255 stay far inside 32-bit integers. */
const SHIFT = 14;
const ONE = 1 << SHIFT;

/**
 * The horizontal plan as the colour pass (horizontal3) reads it for `inC`-byte pixels: each
 * output's taps as `span` consecutive source pixels (a multiple of 4) from its start, given as a
 * byte offset; a tap clamped onto the edge adds its weight to the edge pixel's (the same integer
 * sum) and the taps outside the plan weigh 0 (on a source narrower than the span they lie past
 * its row, inside the room the arena leaves). Weights of two taps packed in one i32. Kept on the
 * plan (a line sends one size frame after frame).
 */
function windowedPlan(plan: AxisPlan, inSize: number, inC: number): NonNullable<AxisPlan['windowed']> {
  if (plan.windowed?.inC === inC) return plan.windowed;
  const n = plan.index.length / plan.taps;
  const lo = new Int32Array(n).fill(inSize);
  let span = 0;
  for (let i = 0; i < n; i++) {
    let hi = -1;
    for (let t = 0; t < plan.taps; t++) {
      if (plan.weights[i * plan.taps + t] === 0) continue;
      const k = plan.index[i * plan.taps + t]!;
      lo[i] = Math.min(lo[i]!, k);
      hi = Math.max(hi, k);
    }
    span = Math.max(span, hi - lo[i]! + 1);
  }
  span = (span + 3) & ~3;
  const starts = new Int32Array(n);
  const folded = new Int32Array(n * span);
  for (let i = 0; i < n; i++) {
    const s = Math.max(0, Math.min(lo[i]!, inSize - span));
    starts[i] = s * inC;
    for (let t = 0; t < plan.taps; t++) {
      const w = plan.weights[i * plan.taps + t]!;
      if (w !== 0) folded[i * span + plan.index[i * plan.taps + t]! - s]! += w;
    }
  }
  // The pass multiplies in 16 bits; a folded edge weight is a part of a row summing to one.
  if (folded.some((w) => w > 32767 || w < -32768)) throw new Error('resample weight outside 16 bits');
  const pairs = new Int32Array(folded.length / 2);
  for (let j = 0; j < pairs.length; j++) pairs[j] = (folded[2 * j]! & 0xffff) | (folded[2 * j + 1]! << 16);
  plan.windowed = { inC, span, starts, pairs };
  return plan.windowed;
}

/** The plan of an axis that keeps its size: each sample its own source, weight one. */
let identity: AxisPlan | undefined;
function identityPlan(size: number): AxisPlan {
  if (identity?.index.length === size) return identity;
  const index = new Int32Array(size);
  for (let i = 0; i < size; i++) index[i] = i;
  identity = { taps: 1, index, weights: new Int32Array(size).fill(ONE) };
  return identity;
}

/**
 * Resizes `src` as the geometry says (to resizeWidth × resizeHeight, then pads for letterbox or
 * cuts for center-crop) into `outWidth × outHeight` HWC uint8 pixels with 1 channel (grey source)
 * or 3, left in the kernels' memory at `at` (until the next frame on this thread) for the caller
 * to turn into a tensor there. Runs on the calling thread: meant for frames of up to a few tens of
 * thousands of pixels, where it costs less than setting up a libvips pipeline. A size that does
 * not change is copied exactly.
 */
export function resampleInArena(
  src: PixelSource,
  g: Placement,
  outWidth: number,
  outHeight: number,
  padValue: number,
): { at: number; channels: 1 | 3 } {
  const inC = src.channels;
  const C = inC === 1 ? 1 : 3;
  // The part of the resized frame that lands in the output, and where it lands.
  const x0 = g.cropLeft;
  const y0 = g.cropTop;
  const cols = Math.min(g.resizeWidth - x0, outWidth - g.padLeft);
  const rows = Math.min(g.resizeHeight - y0, outHeight - g.padTop);

  const { width: inW, height: inH, data } = src;
  const arena = kernelArena();
  const kernels = arena.k;
  arena.reset();

  // The source rows, packed, top-down, into the module's memory.
  const inRow = inW * inC;
  const rowStride = src.stride ?? inRow;
  const first = src.offset ?? 0;
  const srcAt = arena.alloc(inH * inRow);
  let mem = arena.bytes();
  if (rowStride === inRow && !src.bottomUp) {
    mem.set(data.subarray(first, first + inH * inRow), srcAt);
  } else {
    for (let y = 0; y < inH; y++) {
      const r = first + (src.bottomUp ? inH - 1 - y : y) * rowStride;
      mem.set(data.subarray(r, r + inRow), srcAt + y * inRow);
    }
  }

  // Horizontal pass: every source row → `cols` samples, rounded to bytes (libvips keeps uchar
  // between its passes).
  const rowBytes = cols * C;
  const enlarging = g.resizeWidth > inW || g.resizeHeight > inH;
  const hplan = planFor(inW, g.resizeWidth, enlarging, 'x') ?? identityPlan(inW);
  const tmp = arena.alloc(inH * rowBytes);
  if (C === 1) {
    const h = arena.plan(hplan.index, hplan.weights);
    kernels.horizontal1(srcAt, inRow, inH, hplan.taps, h.index, h.weights, x0, cols, tmp, rowBytes);
  } else {
    const w = windowedPlan(hplan, inW, inC);
    const h = arena.plan(w.starts, w.pairs);
    kernels.horizontal3(srcAt, inRow, inH, inC, w.span, h.index, h.weights, x0, cols, tmp, rowBytes);
  }

  // Vertical pass: `rows` output rows from the horizontally resized ones.
  const vplan = planFor(inH, g.resizeHeight, enlarging, 'y');
  let resized = tmp + y0 * rowBytes;
  if (vplan) {
    const v = arena.plan(vplan.index, vplan.weights);
    resized = arena.alloc(rows * rowBytes);
    kernels.vertical(tmp, rowBytes, vplan.taps, v.index, v.weights, y0, rows, resized);
  }
  const outStride = outWidth * C;
  if (rowBytes === outStride && rows === outHeight) return { at: resized, channels: C };
  // Padded (letterbox) or cut: place the rows in a frame of the output's size.
  const out = arena.alloc(outHeight * outStride);
  mem = arena.bytes();
  mem.fill(padValue, out, out + outHeight * outStride);
  const dst0 = out + g.padTop * outStride + g.padLeft * C;
  for (let y = 0; y < rows; y++)
    mem.copyWithin(dst0 + y * outStride, resized + y * rowBytes, resized + (y + 1) * rowBytes);
  return { at: out, channels: C };
}
