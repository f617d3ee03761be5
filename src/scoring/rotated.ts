/**
 * Rotated boxes (YOLO-OBB): Ultralytics' regularisation and ProbIoU, and class-wise greedy NMS
 * with it, as `ultralytics/utils/ops.py` (`regularize_rboxes`) and `ultralytics/utils/metrics.py`
 * (`batch_probiou`) compute them (docs/model-families.md, "Oriented boxes").
 */
export interface RotatedCandidate {
  cx: number;
  cy: number;
  w: number;
  h: number;
  /** Radians. */
  angle: number;
  score: number;
  cls: number;
}

/** Long side first, angle in [0, π): Ultralytics' `regularize_rboxes`. */
export function regularize(b: RotatedCandidate): RotatedCandidate {
  const swap = !(b.w > b.h);
  const angle = (swap ? b.angle + Math.PI / 2 : b.angle) % Math.PI;
  return {
    ...b,
    w: swap ? b.h : b.w,
    h: swap ? b.w : b.h,
    angle: angle < 0 ? angle + Math.PI : angle,
  };
}

function covariance(b: RotatedCandidate): [number, number, number] {
  const a = (b.w * b.w) / 12;
  const bb = (b.h * b.h) / 12;
  const cos = Math.cos(b.angle);
  const sin = Math.sin(b.angle);
  return [a * cos * cos + bb * sin * sin, a * sin * sin + bb * cos * cos, (a - bb) * cos * sin];
}

/** ProbIoU of two rotated boxes (1 − Hellinger distance of their Gaussians), in [0, 1]. */
export function probiou(p: RotatedCandidate, q: RotatedCandidate, eps = 1e-7): number {
  const [a1, b1, c1] = covariance(p);
  const [a2, b2, c2] = covariance(q);
  const A = a1 + a2;
  const B = b1 + b2;
  const C = c1 + c2;
  const den = A * B - C * C + eps;
  const t1 = ((A * (p.cy - q.cy) ** 2 + B * (p.cx - q.cx) ** 2) / den) * 0.25;
  const t2 = ((C * (q.cx - p.cx) * (p.cy - q.cy)) / den) * 0.5;
  const det1 = Math.max(a1 * b1 - c1 * c1, 0);
  const det2 = Math.max(a2 * b2 - c2 * c2, 0);
  const t3 = Math.log((A * B - C * C) / (4 * Math.sqrt(det1 * det2) + eps) + eps) * 0.5;
  const bd = Math.min(Math.max(t1 + t2 + t3, eps), 100);
  const hd = Math.sqrt(1 - Math.exp(-bd) + eps);
  return 1 - hd;
}

/** Class-wise greedy NMS by score with ProbIoU; returns kept indices, best first. */
export function rotatedNms(c: readonly RotatedCandidate[], iouThreshold: number, max: number): number[] {
  const order = c.map((_, i) => i).sort((a, b) => c[b]!.score - c[a]!.score || a - b);
  const kept: number[] = [];
  for (const i of order) {
    if (kept.length >= max) break;
    if (kept.every((k) => c[k]!.cls !== c[i]!.cls || !(probiou(c[k]!, c[i]!) > iouThreshold))) kept.push(i);
  }
  return kept;
}

/** The four corners of a rotated box, starting at the centre + (w/2, h/2) rotated, clockwise in image axes. */
export function corners(b: Pick<RotatedCandidate, 'cx' | 'cy' | 'w' | 'h' | 'angle'>): [number, number][] {
  const cos = Math.cos(b.angle);
  const sin = Math.sin(b.angle);
  return [
    [1, 1],
    [-1, 1],
    [-1, -1],
    [1, -1],
  ].map(([sx, sy]) => {
    const dx = (sx! * b.w) / 2;
    const dy = (sy! * b.h) / 2;
    return [b.cx + dx * cos - dy * sin, b.cy + dx * sin + dy * cos];
  });
}
