// The pixel loops of small frames and board regions in WebAssembly, 128-bit SIMD where it pays
// (AssemblyScript, compiled by `npm run build:wasm` to dist/wasm/kernels.wasm): the resampler's two
// passes and the float tensor's channels. src/scoring/kernels.ts loads them and owns the memory;
// src/scoring/resample.ts plans the taps and weights; these loops only sum. The arithmetic is the plan's fixed
// point: 32-bit integer sums of weight × byte, then (sum + 2^13) >> 14 saturated to 0..255, the
// same integers the plan defines, so the result does not depend on lane width or order.
// docs/architecture.md, "The path of a frame", says where this runs.

const HALF: i32 = 1 << 13;
const SHIFT: i32 = 14;

/** Four i32 lanes → four bytes (lanes 0..3 of the result), each (v + HALF) >> SHIFT in 0..255. */
function toBytes(v: v128): v128 {
  const s = i32x4.shr_s(i32x4.add(v, i32x4.splat(HALF)), SHIFT);
  const h = i16x8.narrow_i32x4_s(s, s);
  return i8x16.narrow_i16x8_u(h, h);
}

/**
 * Horizontal pass, colour pixels of `pixelBytes` bytes (3, or 4 with a fourth byte that is not
 * read): for each of `rows` source rows (row r starts at src + r·srcStride), `cols` output pixels
 * of three bytes from plan entries x0..x0+cols, written packed from dst, rows `dstStride` apart.
 * Each output pixel's taps are `span` consecutive source pixels (a multiple of 4) from byte offset
 * starts[x] of the row; the weights of two taps come packed in one i32 (low half the first). One
 * 16-byte load gives four taps' pixels, interleaved channel by channel into two 16-bit vectors by
 * one swizzle and summed with two dot products. Loads and stores run up to 16 bytes past the
 * source's last row and the output's: the caller leaves that room after both.
 */
export function horizontal3(
  src: usize,
  srcStride: i32,
  rows: i32,
  pixelBytes: i32,
  span: i32,
  starts: usize,
  pairs: usize,
  x0: i32,
  cols: i32,
  dst: usize,
  dstStride: i32,
): void {
  const quads = span >> 2;
  // Byte picks for [c0 of tap 0, c0 of tap 1, c1, c1, c2, c2, -, -] for taps 0-1 then 2-3;
  // 16 picks zero.
  const mix =
    pixelBytes == 3
      ? i8x16(0, 3, 1, 4, 2, 5, 16, 16, 6, 9, 7, 10, 8, 11, 16, 16)
      : i8x16(0, 4, 1, 5, 2, 6, 16, 16, 8, 12, 9, 13, 10, 14, 16, 16);
  const step = <usize>(pixelBytes << 2);
  for (let y = 0; y < rows; y++) {
    const row = src + <usize>(y * srcStride);
    let o = dst + <usize>(y * dstStride);
    for (let x = 0; x < cols; x++) {
      const i = x0 + x;
      let p = row + <usize>load<i32>(starts + ((<usize>i) << 2));
      let w = pairs + ((<usize>(i * (span >> 1))) << 2);
      let acc = i32x4.splat(0);
      for (let q = 0; q < quads; q++) {
        const v = i8x16.swizzle(v128.load(p), mix);
        acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(v), i32x4.splat(load<i32>(w))));
        acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(v), i32x4.splat(load<i32>(w + 4))));
        p += step;
        w += 8;
      }
      v128.store32_lane(o, toBytes(acc), 0);
      o += 3;
    }
  }
}

/**
 * Horizontal pass, one channel: for each output pixel the taps' source indices and weights of the
 * plan, a byte a pixel (no room needed after rows).
 */
export function horizontal1(
  src: usize,
  srcStride: i32,
  rows: i32,
  taps: i32,
  index: usize,
  weights: usize,
  x0: i32,
  cols: i32,
  dst: usize,
  dstStride: i32,
): void {
  for (let y = 0; y < rows; y++) {
    const row = src + <usize>(y * srcStride);
    const o = dst + <usize>(y * dstStride);
    for (let x = 0; x < cols; x++) {
      const base = (<usize>((x0 + x) * taps)) << 2;
      let acc: i32 = 0;
      for (let t = 0; t < taps; t++) {
        const at = base + ((<usize>t) << 2);
        acc += load<i32>(weights + at) * <i32>load<u8>(row + <usize>load<i32>(index + at));
      }
      const r = (acc + HALF) >> SHIFT;
      store<u8>(o + <usize>x, r < 0 ? 0 : r > 255 ? 255 : r);
    }
  }
}

/**
 * Vertical pass: output row y (of `rows`, from plan entry y0 + y) is the weighted sum of whole
 * rows of `tmp` (`rowBytes` each), 16 bytes at a time; written packed from dst. A row's last
 * 16-byte step may run past it: the caller leaves 16 bytes of room after `tmp` and `dst`, and the
 * spill lands where the next output row is written afterwards. Weights must fit 16 bits (the plan
 * checks it).
 */
export function vertical(
  tmp: usize,
  rowBytes: i32,
  taps: i32,
  index: usize,
  weights: usize,
  y0: i32,
  rows: i32,
  dst: usize,
): void {
  for (let y = 0; y < rows; y++) {
    const base = (<usize>((y0 + y) * taps)) << 2;
    const o = dst + <usize>(y * rowBytes);
    for (let k = 0; k < rowBytes; k += 16) {
      let a0 = i32x4.splat(0);
      let a1 = i32x4.splat(0);
      let a2 = i32x4.splat(0);
      let a3 = i32x4.splat(0);
      for (let t = 0; t < taps; t++) {
        const at = base + ((<usize>t) << 2);
        const w = i16x8.splat(<i16>load<i32>(weights + at));
        const v = v128.load(tmp + <usize>(load<i32>(index + at) * rowBytes + k));
        const lo = i16x8.extend_low_i8x16_u(v);
        const hi = i16x8.extend_high_i8x16_u(v);
        a0 = i32x4.add(a0, i32x4.extmul_low_i16x8_s(lo, w));
        a1 = i32x4.add(a1, i32x4.extmul_high_i16x8_s(lo, w));
        a2 = i32x4.add(a2, i32x4.extmul_low_i16x8_s(hi, w));
        a3 = i32x4.add(a3, i32x4.extmul_high_i16x8_s(hi, w));
      }
      const r = i32x4.splat(HALF);
      const s0 = i32x4.shr_s(i32x4.add(a0, r), SHIFT);
      const s1 = i32x4.shr_s(i32x4.add(a1, r), SHIFT);
      const s2 = i32x4.shr_s(i32x4.add(a2, r), SHIFT);
      const s3 = i32x4.shr_s(i32x4.add(a3, r), SHIFT);
      v128.store(
        o + <usize>k,
        i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_s(s0, s1), i16x8.narrow_i32x4_s(s2, s3)),
      );
    }
  }
}

/**
 * One float32 channel of a model tensor: for `count` pixels, the byte at src + first + i·srcStep,
 * times m plus a, in f64 and then rounded to f32 (what JavaScript's `p * m + a` stored into a
 * Float32Array gives, bit for bit), written at dst + 4·i·dstStep.
 */
export function channelF32(
  src: usize,
  first: i32,
  srcStep: i32,
  count: i32,
  m: f64,
  a: f64,
  dst: usize,
  dstStep: i32,
): void {
  let p = src + <usize>first;
  let o = dst;
  const step = <usize>srcStep;
  const ostep = (<usize>dstStep) << 2;
  for (let i = 0; i < count; i++) {
    store<f32>(o, <f32>(<f64>load<u8>(p) * m + a));
    p += step;
    o += ostep;
  }
}
