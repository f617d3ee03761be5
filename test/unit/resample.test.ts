import { describe, expect, it } from 'vitest';
import { geometryFor } from '../../src/scoring/geometry.js';
import type { ResizeMode } from '../../src/scoring/manifest.js';
import { kernelArena } from '../../src/scoring/kernels.js';
import { planFor, resampleInArena, type AxisPlan, type PixelSource } from '../../src/scoring/resample.js';
import { rng } from '../helpers/frames.js';

/**
 * The resampler's WebAssembly passes (wasm/kernels.ts) against the plan's own definition, summed
 * in plain integers here: for each output sample Σ weight × byte, then (sum + 2^13) >> 14 clamped
 * to 0..255, horizontally over every source row, then vertically (bench/README.md, "The pixel
 * loops in WebAssembly"). The passes must give these bytes exactly: the colour pass reads each
 * output pixel's taps as one window of consecutive source pixels, edge taps folded onto the edge.
 */

const ONE = 1 << 14;
const sum = (plan: Readonly<AxisPlan> | undefined, i: number, at: (k: number) => number): number => {
  if (!plan) return at(i);
  let acc = 0;
  for (let t = 0; t < plan.taps; t++)
    acc += plan.weights[i * plan.taps + t]! * at(plan.index[i * plan.taps + t]!);
  return Math.min(255, Math.max(0, (acc + ONE / 2) >> 14));
};

function reference(src: PixelSource, mode: ResizeMode, outW: number, outH: number, pad: number): Uint8Array {
  const { width: inW, height: inH, channels: inC } = src;
  const g = geometryFor(mode, inW, inH, outW, outH);
  const C = inC === 1 ? 1 : 3;
  const stride = src.stride ?? inW * inC;
  const px = (x: number, y: number, c: number): number => {
    const row = src.bottomUp ? inH - 1 - y : y;
    return src.data[(src.offset ?? 0) + row * stride + x * inC + c]!;
  };
  const enlarging = g.resizeWidth > inW || g.resizeHeight > inH;
  const hplan = planFor(inW, g.resizeWidth, enlarging, 'x');
  const vplan = planFor(inH, g.resizeHeight, enlarging, 'y');
  const cols = Math.min(g.resizeWidth - g.cropLeft, outW - g.padLeft);
  const rows = Math.min(g.resizeHeight - g.cropTop, outH - g.padTop);
  // Horizontally over every source row, then vertically over those rows.
  const across = new Uint8Array(inH * cols * C);
  for (let sy = 0; sy < inH; sy++)
    for (let x = 0; x < cols; x++)
      for (let c = 0; c < C; c++)
        across[(sy * cols + x) * C + c] = sum(hplan, g.cropLeft + x, (sx) => px(sx, sy, c));
  const out = new Uint8Array(outW * outH * C).fill(pad);
  for (let y = 0; y < rows; y++)
    for (let x = 0; x < cols; x++)
      for (let c = 0; c < C; c++)
        out[((g.padTop + y) * outW + g.padLeft + x) * C + c] = sum(
          vplan,
          g.cropTop + y,
          (sy) => across[(sy * cols + x) * C + c]!,
        );
  return out;
}

describe('the resampler kernels', () => {
  it('give the plan’s integer sums exactly, on 600 random frames, windows and sizes', () => {
    const next = rng(20261203);
    const int = (lo: number, hi: number): number => lo + Math.floor(next() * (hi - lo + 1));
    const modes: ResizeMode[] = ['stretch', 'letterbox', 'center-crop'];
    let windows = 0;
    for (let n = 0; n < 600; n++) {
      const channels = [1, 3, 3, 3, 4][int(0, 4)] as 1 | 3 | 4;
      const width = int(1, 320);
      const height = int(1, 64);
      const stride = (width + int(0, 4)) * channels;
      const data = new Uint8Array(stride * height + 8).map(() => int(0, 255));
      const src: PixelSource = {
        data,
        width,
        height,
        channels,
        offset: int(0, 2) * channels,
        stride,
        bottomUp: next() < 0.2,
      };
      src.data = data.subarray(0, (src.offset ?? 0) + stride * (height - 1) + width * channels);
      const mode = modes[int(0, 2)]!;
      const outW = int(1, 200);
      const outH = int(1, 64);
      const g = geometryFor(mode, width, height, outW, outH);
      const { at, channels: C } = resampleInArena(src, g, outW, outH, 114);
      const got = kernelArena()
        .bytes()
        .slice(at, at + outW * outH * C);
      const want = reference(src, mode, outW, outH, 114);
      const first = got.findIndex((v, i) => v !== want[i]);
      expect(
        first < 0 && got.length === want.length ? 'same' : `byte ${first}: ${got[first]} for ${want[first]}`,
        `case ${n}: ${width}×${height}×${channels} → ${outW}×${outH} ${mode}`,
      ).toBe('same');
      if (channels !== 1 && g.resizeWidth !== width) windows++;
    }
    // Enough of the cases resized colour pixels across for the window kernel to be checked.
    expect(windows).toBeGreaterThan(300);
  });
});
