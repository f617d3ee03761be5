/**
 * Intersection-over-union and class-wise greedy non-maximum suppression.
 *
 * Boxes are corner form (x1, y1) top-left, (x2, y2) bottom-right, in any one coordinate space
 * (the detection decoders run NMS in model-input pixels, as Ultralytics does). A box with x2 <= x1 or
 * y2 <= y1 has zero area.
 */

export interface CornerBox {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface NmsCandidate extends CornerBox {
  score: number;
  /** Class index; suppression only happens between candidates of the same class. */
  cls: number;
}

/** IoU of two corner boxes, in [0, 1]. Zero when either box is empty or the union is empty. */
export function iou(a: CornerBox, b: CornerBox): number {
  const iw = Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1);
  if (!(iw > 0)) return 0;
  const ih = Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1);
  if (!(ih > 0)) return 0;
  const inter = iw * ih;
  const areaA = Math.max(0, a.x2 - a.x1) * Math.max(0, a.y2 - a.y1);
  const areaB = Math.max(0, b.x2 - b.x1) * Math.max(0, b.y2 - b.y1);
  const union = areaA + areaB - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * Class-wise greedy NMS.
 *
 * Candidates are visited by score, descending (ties: lower index first). A candidate is kept
 * unless a previously kept candidate of the same class overlaps it with IoU strictly greater than
 * `iouThreshold` (IoU exactly at the threshold is kept, as in torchvision/Ultralytics). Stops as
 * soon as `maxDetections` candidates are kept.
 *
 * Returns the indices (into `candidates`) of the kept candidates, in score-descending order.
 * Cost is O(n log n) for the sort plus O(n × kept) comparisons at worst; run it on the
 * candidates that passed the score threshold only.
 */
export function nmsClasswise(
  candidates: readonly NmsCandidate[],
  iouThreshold: number,
  maxDetections: number,
): number[] {
  const n = candidates.length;
  const limit = Math.max(0, Math.floor(maxDetections));
  if (n === 0 || limit === 0) return [];

  const order = new Array<number>(n);
  const scores = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    order[i] = i;
    scores[i] = candidates[i]!.score;
  }
  // Array.prototype.sort is stable, so equal scores keep index order.
  order.sort((i, j) => scores[j]! - scores[i]!);

  const kept: number[] = [];
  // Kept candidates grouped by class, so each candidate is compared with its own class only.
  const keptByClass = new Map<number, NmsCandidate[]>();
  for (let k = 0; k < n && kept.length < limit; k++) {
    const idx = order[k]!;
    const c = candidates[idx]!;
    let same = keptByClass.get(c.cls);
    let suppressed = false;
    if (same) {
      for (const other of same) {
        if (iou(c, other) > iouThreshold) {
          suppressed = true;
          break;
        }
      }
    } else {
      same = [];
      keptByClass.set(c.cls, same);
    }
    if (!suppressed) {
      same.push(c);
      kept.push(idx);
    }
  }
  return kept;
}
