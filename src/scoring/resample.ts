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
interface AxisPlan {
  taps: number;
  /** [out × taps] source indices, clamped to the edge (libvips extends edges by copying). */
  index: Int32Array;
  /** [out × taps] weights in 1/2^14, each row summing to exactly 2^14. */
  weights: Int32Array;
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

function toPlan(rows: Row[], multiple: number): AxisPlan {
  // The vertical pass sums four rows per sweep: its plans have a multiple of four taps (padding
  // taps weigh 0).
  const taps = Math.ceil(Math.max(...rows.map((r) => r.size)) / multiple) * multiple;
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
function planAxis(
  inSize: number,
  outSize: number,
  enlarging: boolean,
  multiple: number,
): AxisPlan | undefined {
  if (!enlarging) return inSize === outSize ? undefined : toPlan(reduceRows(inSize, outSize), multiple);
  if (inSize <= outSize) return toPlan(affineRows(inSize, outSize), multiple);
  return toPlan(compose(affineRows(outSize, outSize), reduceRows(inSize, outSize)), multiple);
}

/**
 * Plans depend only on the sizes, and a line sends the same sizes frame after frame: keep the
 * last few so a frame pays for its pixels only.
 */
const PLAN_CACHE_SIZE = 16;
const plans = new Map<string, AxisPlan | undefined>();

function planFor(inSize: number, outSize: number, enlarging: boolean, axis: 'x' | 'y'): AxisPlan | undefined {
  const key = `${axis}:${inSize}:${outSize}:${enlarging}`;
  if (plans.has(key)) return plans.get(key);
  const plan = planAxis(inSize, outSize, enlarging, axis === 'y' ? 4 : 1);
  if (plans.size >= PLAN_CACHE_SIZE) plans.delete(plans.keys().next().value!);
  plans.set(key, plan);
  return plan;
}

/** Fixed point: weights in 1/2^14, so 12 taps of 255 stay far inside 32-bit integers. */
const SHIFT = 14;
const ONE = 1 << SHIFT;
const HALF = 1 << (SHIFT - 1);

const clampByte = (v: number): number => {
  const r = (v + HALF) >> SHIFT;
  return r < 0 ? 0 : r > 255 ? 255 : r;
};

function horizontal1(
  data: Uint8Array,
  row: number,
  plan: AxisPlan,
  x0: number,
  cols: number,
  out: Uint8Array,
  o: number,
): void {
  const { taps, index, weights } = plan;
  for (let x = 0; x < cols; x++) {
    const base = (x0 + x) * taps;
    let a = 0;
    for (let t = 0; t < taps; t++) a += weights[base + t]! * data[row + index[base + t]!]!;
    out[o + x] = clampByte(a);
  }
}

/**
 * Output rows as weighted sums of whole rows of `tmp`, four taps per sweep (plans are padded to a
 * multiple of four): each sweep reads four source rows and the accumulator once, which is what
 * keeps this loop near a nanosecond per sample in V8.
 */
function vertical(
  tmp: Uint8Array,
  rowBytes: number,
  plan: AxisPlan,
  y0: number,
  rows: number,
  out: Uint8Array,
  dst0: number,
  outStride: number,
): void {
  const { taps, index, weights } = plan;
  const acc = new Int32Array(rowBytes);
  for (let y = 0; y < rows; y++) {
    const base = (y0 + y) * taps;
    const o = dst0 + y * outStride;
    for (let t = 0; t < taps; t += 4) {
      const w0 = weights[base + t]!;
      const w1 = weights[base + t + 1]!;
      const w2 = weights[base + t + 2]!;
      const w3 = weights[base + t + 3]!;
      const f0 = index[base + t]! * rowBytes;
      const f1 = index[base + t + 1]! * rowBytes;
      const f2 = index[base + t + 2]! * rowBytes;
      const f3 = index[base + t + 3]! * rowBytes;
      if (taps === 4) {
        for (let k = 0; k < rowBytes; k++)
          out[o + k] = clampByte(
            w0 * tmp[f0 + k]! + w1 * tmp[f1 + k]! + w2 * tmp[f2 + k]! + w3 * tmp[f3 + k]!,
          );
      } else if (t === 0) {
        for (let k = 0; k < rowBytes; k++)
          acc[k] = w0 * tmp[f0 + k]! + w1 * tmp[f1 + k]! + w2 * tmp[f2 + k]! + w3 * tmp[f3 + k]!;
      } else {
        for (let k = 0; k < rowBytes; k++)
          acc[k] =
            (acc[k]! + w0 * tmp[f0 + k]! + w1 * tmp[f1 + k]! + w2 * tmp[f2 + k]! + w3 * tmp[f3 + k]!) | 0;
      }
    }
    if (taps !== 4) for (let k = 0; k < rowBytes; k++) out[o + k] = clampByte(acc[k]!);
  }
}

/** Three colour channels read from pixels of `inC` bytes (3, or 4 with a fourth ignored). */
function horizontal3(
  data: Uint8Array,
  row: number,
  inC: number,
  plan: AxisPlan,
  x0: number,
  cols: number,
  out: Uint8Array,
  o: number,
): void {
  const { taps, index, weights } = plan;
  for (let x = 0; x < cols; x++) {
    const base = (x0 + x) * taps;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    for (let t = 0; t < taps; t++) {
      const w = weights[base + t]!;
      const p = row + index[base + t]! * inC;
      a0 += w * data[p]!;
      a1 += w * data[p + 1]!;
      a2 += w * data[p + 2]!;
    }
    const q = o + x * 3;
    out[q] = clampByte(a0);
    out[q + 1] = clampByte(a1);
    out[q + 2] = clampByte(a2);
  }
}

/**
 * Resizes `src` as the geometry says (to resizeWidth × resizeHeight, then pads for letterbox or
 * cuts for center-crop) into `outWidth × outHeight` HWC uint8 pixels with 1 channel (grey source)
 * or 3. Runs on the calling thread: meant for frames of up to a few tens of thousands of pixels,
 * where it costs less than setting up a libvips pipeline. A size that does not change is copied
 * exactly.
 */
export function resampleFrame(
  src: PixelSource,
  g: Placement,
  outWidth: number,
  outHeight: number,
  padValue: number,
): { data: Uint8Array; channels: 1 | 3 } {
  const inC = src.channels;
  const C = inC === 1 ? 1 : 3;
  const out = new Uint8Array(outWidth * outHeight * C);
  // The part of the resized frame that lands in the output, and where it lands.
  const x0 = g.cropLeft;
  const y0 = g.cropTop;
  const cols = Math.min(g.resizeWidth - x0, outWidth - g.padLeft);
  const rows = Math.min(g.resizeHeight - y0, outHeight - g.padTop);
  if (g.padLeft || g.padTop || g.padRight || g.padBottom) out.fill(padValue);

  const { width: inW, height: inH, data } = src;
  const rowStride = inW * inC;

  // Horizontal pass: every source row → `cols` samples, rounded to bytes (libvips keeps uchar
  // between its passes).
  const rowBytes = cols * C;
  const tmp = new Uint8Array(inH * rowBytes);
  const enlarging = g.resizeWidth > inW || g.resizeHeight > inH;
  const plan = planFor(inW, g.resizeWidth, enlarging, 'x');
  for (let y = 0; y < inH; y++) {
    const r = (src.bottomUp ? inH - 1 - y : y) * rowStride;
    const o = y * rowBytes;
    if (!plan) {
      for (let x = 0; x < cols; x++)
        for (let c = 0; c < C; c++) tmp[o + x * C + c] = data[r + (x0 + x) * inC + c]!;
    } else if (C === 1) {
      horizontal1(data, r, plan, x0, cols, tmp, o);
    } else {
      horizontal3(data, r, inC, plan, x0, cols, tmp, o);
    }
  }

  // Vertical pass: `rows` output rows from the horizontally resized ones, written in place.
  const outStride = outWidth * C;
  const dst0 = g.padTop * outStride + g.padLeft * C;
  const vplan = planFor(inH, g.resizeHeight, enlarging, 'y');
  if (!vplan) {
    for (let y = 0; y < rows; y++)
      out.set(tmp.subarray((y0 + y) * rowBytes, (y0 + y + 1) * rowBytes), dst0 + y * outStride);
  } else {
    vertical(tmp, rowBytes, vplan, y0, rows, out, dst0, outStride);
  }
  return { data: out, channels: C };
}
