import { frameX, frameY, type FrameGeometry } from './geometry.js';
import type { NumberTypedArray } from './output-shape.js';

/**
 * Instance masks of YOLO segmentation models (docs/model-families.md, "Instance segmentation"),
 * decoded as Ultralytics' `ops.process_mask(..., upsample=True)` and `masks2segments` do:
 *
 * 1. mask logits = the detection's mask coefficients · the prototypes (`[nm, mh, mw]`);
 * 2. cropped to the box scaled to prototype pixels (`crop_mask`: a prototype pixel (c, r) stays
 *    when x1 ≤ c < x2 and y1 ≤ r < y2; the rest is 0);
 * 3. upsampled bilinearly to the model input (`F.interpolate(..., align_corners=False)`);
 * 4. on where the logit is > 0 (the same as sigmoid > 0.5);
 * 5. its outer contour (OpenCV `findContours`, `RETR_EXTERNAL`, `CHAIN_APPROX_SIMPLE`: boundary
 *    pixel centres, corners only), of the largest part when the mask falls apart, mapped from
 *    the (letterboxed) model input back to frame pixels (`scale_coords`).
 *
 * Only the input pixels near the box are computed: everything else is 0 after the crop.
 */

export interface Prototypes {
  data: NumberTypedArray;
  /** Offset of this frame's prototypes in `data`. */
  base: number;
  count: number;
  height: number;
  width: number;
}

/** The mask of one detection over the model input, as a polygon in frame pixels. */
export function maskPolygon(
  protos: Prototypes,
  coefficients: readonly number[],
  box: { x1: number; y1: number; x2: number; y2: number },
  input: { width: number; height: number },
  g: FrameGeometry,
): [number, number][] {
  const { data, base, count, height: mh, width: mw } = protos;
  const rx = mw / input.width;
  const ry = mh / input.height;
  // The crop, in prototype pixels (float bounds, as crop_mask compares them).
  const cx1 = box.x1 * rx;
  const cx2 = box.x2 * rx;
  const cy1 = box.y1 * ry;
  const cy2 = box.y2 * ry;
  // Prototype pixels that can be non-zero, plus one around for the interpolation.
  const px0 = Math.max(0, Math.ceil(cx1) - 1);
  const px1 = Math.min(mw - 1, Math.ceil(cx2) + 1);
  const py0 = Math.max(0, Math.ceil(cy1) - 1);
  const py1 = Math.min(mh - 1, Math.ceil(cy2) + 1);
  if (px1 < px0 || py1 < py0) return [];
  const pw = px1 - px0 + 1;
  const ph = py1 - py0 + 1;
  const logits = new Float64Array(pw * ph);
  const plane = mh * mw;
  for (let r = py0; r <= py1; r++) {
    if (!(r >= cy1 && r < cy2)) continue;
    for (let c = px0; c <= px1; c++) {
      if (!(c >= cx1 && c < cx2)) continue;
      let v = 0;
      const at = base + r * mw + c;
      for (let k = 0; k < count; k++) v += coefficients[k]! * data[at + k * plane]!;
      logits[(r - py0) * pw + (c - px0)] = v;
    }
  }
  const sample = (r: number, c: number): number =>
    r < py0 || r > py1 || c < px0 || c > px1 ? 0 : logits[(r - py0) * pw + (c - px0)]!;

  // Input pixels whose interpolation reaches the computed prototype pixels.
  const ix0 = Math.max(0, Math.floor(px0 / rx) - 1);
  const ix1 = Math.min(input.width - 1, Math.ceil((px1 + 1) / rx) + 1);
  const iy0 = Math.max(0, Math.floor(py0 / ry) - 1);
  const iy1 = Math.min(input.height - 1, Math.ceil((py1 + 1) / ry) + 1);
  const w = ix1 - ix0 + 1;
  const h = iy1 - iy0 + 1;
  const on = new Uint8Array(w * h);
  for (let iy = iy0; iy <= iy1; iy++) {
    // align_corners=False: the source coordinate of output pixel i is (i + 0.5) / scale − 0.5, clamped at 0.
    const sy = Math.max(0, (iy + 0.5) * ry - 0.5);
    const r0 = Math.min(mh - 1, Math.floor(sy));
    const r1 = Math.min(mh - 1, r0 + 1);
    const fy = sy - r0;
    for (let ix = ix0; ix <= ix1; ix++) {
      const sx = Math.max(0, (ix + 0.5) * rx - 0.5);
      const c0 = Math.min(mw - 1, Math.floor(sx));
      const c1 = Math.min(mw - 1, c0 + 1);
      const fx = sx - c0;
      const v =
        (1 - fy) * ((1 - fx) * sample(r0, c0) + fx * sample(r0, c1)) +
        fy * ((1 - fx) * sample(r1, c0) + fx * sample(r1, c1));
      if (v > 0) on[(iy - iy0) * w + (ix - ix0)] = 1;
    }
  }
  const contour = largestContour(on, w, h);
  return contour.map(([x, y]) => [round3(frameX(g, x + ix0)), round3(frameY(g, y + iy0))]);
}

/**
 * The outer contour of the largest 8-connected part of a binary image: its boundary pixels, traced
 * clockwise (Moore neighbourhood) from the top-left one, with the points inside straight
 * horizontal, vertical or diagonal runs left out.
 */
export function largestContour(on: Uint8Array, w: number, h: number): [number, number][] {
  const label = new Int32Array(w * h);
  let best = -1;
  let bestSize = 0;
  let next = 0;
  const stack: number[] = [];
  for (let start = 0; start < w * h; start++) {
    if (!on[start] || label[start]) continue;
    next++;
    let size = 0;
    label[start] = next;
    stack.push(start);
    while (stack.length > 0) {
      const p = stack.pop()!;
      size++;
      const x = p % w;
      const y = (p - x) / w;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const q = ny * w + nx;
          if (on[q] && !label[q]) {
            label[q] = next;
            stack.push(q);
          }
        }
      }
    }
    if (size > bestSize) {
      bestSize = size;
      best = next;
    }
  }
  if (best < 0) return [];
  const inPart = (x: number, y: number): boolean =>
    x >= 0 && y >= 0 && x < w && y < h && label[y * w + x] === best;
  // The first pixel of the part in raster order is a boundary pixel with nothing above or left of it.
  let first = 0;
  while (label[first] !== best) first++;
  const sx = first % w;
  const sy = (first - sx) / w;
  // Moore neighbours clockwise from west: W, NW, N, NE, E, SE, S, SW.
  const DX = [-1, -1, 0, 1, 1, 1, 0, -1];
  const DY = [0, -1, -1, -1, 0, 1, 1, 1];
  const points: [number, number][] = [[sx, sy]];
  if (bestSize === 1) return points;
  let x = sx;
  let y = sy;
  // We entered the start pixel from the west (nothing is left of it).
  let from = 0;
  // Jacob's stopping rule: done when the start pixel is left again the way it was left first.
  let firstMove = -1;
  for (let guard = 0; guard < 4 * w * h + 8; guard++) {
    let found = -1;
    for (let k = 1; k <= 8; k++) {
      const d = (from + k) % 8;
      if (inPart(x + DX[d]!, y + DY[d]!)) {
        found = d;
        break;
      }
    }
    if (found < 0) break;
    if (x === sx && y === sy) {
      if (found === firstMove) break;
      if (firstMove < 0) firstMove = found;
    }
    x += DX[found]!;
    y += DY[found]!;
    // Search the next neighbour starting just after the one we came from.
    from = (found + 4) % 8;
    if (x !== sx || y !== sy) points.push([x, y]);
  }
  return simplify(points);
}

/** Keeps the points where the direction changes (OpenCV's CHAIN_APPROX_SIMPLE). */
function simplify(points: [number, number][]): [number, number][] {
  const n = points.length;
  if (n < 3) return points;
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const prev = points[(i - 1 + n) % n]!;
    const cur = points[i]!;
    const next = points[(i + 1) % n]!;
    const d1x = Math.sign(cur[0] - prev[0]);
    const d1y = Math.sign(cur[1] - prev[1]);
    const d2x = Math.sign(next[0] - cur[0]);
    const d2y = Math.sign(next[1] - cur[1]);
    if (d1x !== d2x || d1y !== d2y) out.push(cur);
  }
  return out;
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}
