import { frameX, frameY, type FrameGeometry } from './geometry.js';
import type { AnomalyRegion } from './prediction.js';

/**
 * Defect regions of an anomaly map: 8-connected components of the pixels marked in `mask`
 * (h × w, row-major), each as its bounding box, area and peak value in frame pixels. The map
 * covers the model input (`inputWidth` × `inputHeight`), so one map pixel is a cell of
 * inputWidth / w × inputHeight / h input pixels; `geometry` maps input pixels back to the frame.
 * Regions are sorted by peak, highest first, and capped at `max`.
 */
export function anomalyRegions(
  mask: Uint8Array,
  values: Float32Array,
  w: number,
  h: number,
  inputWidth: number,
  inputHeight: number,
  g: FrameGeometry,
  max: number,
): AnomalyRegion[] {
  const cellW = inputWidth / w;
  const cellH = inputHeight / h;
  const label = new Int32Array(w * h);
  const stack: number[] = [];
  const regions: AnomalyRegion[] = [];
  let next = 0;
  for (let start = 0; start < w * h; start++) {
    if (mask[start] === 0 || label[start] !== 0) continue;
    next++;
    label[start] = next;
    stack.push(start);
    let x0 = w;
    let y0 = h;
    let x1 = -1;
    let y1 = -1;
    let count = 0;
    let peak = -Infinity;
    while (stack.length > 0) {
      const i = stack.pop()!;
      const x = i % w;
      const y = (i - x) / w;
      count++;
      if (values[i]! > peak) peak = values[i]!;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= h) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= w) continue;
          const j = ny * w + nx;
          if (mask[j] !== 0 && label[j] === 0) {
            label[j] = next;
            stack.push(j);
          }
        }
      }
    }
    const fx1 = frameX(g, x0 * cellW);
    const fy1 = frameY(g, y0 * cellH);
    const fx2 = frameX(g, (x1 + 1) * cellW);
    const fy2 = frameY(g, (y1 + 1) * cellH);
    const area = (count * cellW * cellH) / (g.scaleX * g.scaleY);
    if (!(fx2 > fx1 && fy2 > fy1)) continue; // entirely in letterbox padding
    regions.push({
      box: { x: round3(fx1), y: round3(fy1), width: round3(fx2 - fx1), height: round3(fy2 - fy1) },
      area: round3(area),
      peak,
    });
  }
  regions.sort((a, b) => b.peak - a.peak);
  return regions.slice(0, max);
}

/** The map as 8-bit grey, max-pooled to at most `side` pixels a side. */
export function smallMap(
  values: Float32Array,
  w: number,
  h: number,
  side = 128,
): { width: number; height: number; data: Uint8Array } {
  const stride = Math.max(1, Math.ceil(Math.max(w, h) / side));
  const ow = Math.ceil(w / stride);
  const oh = Math.ceil(h / stride);
  const data = new Uint8Array(ow * oh);
  for (let oy = 0; oy < oh; oy++) {
    for (let ox = 0; ox < ow; ox++) {
      let m = 0;
      for (let y = oy * stride; y < Math.min(h, (oy + 1) * stride); y++) {
        for (let x = ox * stride; x < Math.min(w, (ox + 1) * stride); x++) {
          const v = values[y * w + x]!;
          if (v > m) m = v;
        }
      }
      data[oy * ow + ox] = Math.round(Math.min(1, m) * 255);
    }
  }
  return { width: ow, height: oh, data };
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}
