import type { Box, Detection, FramePrediction } from '../scoring/prediction.js';

/** The frame label a detector's frame is filed under in the confusion when it detects nothing. */
export const NO_DETECTION = '(none)';

/** IoU at or above which an active and a candidate box of the same label count as one. */
export const BOX_IOU = 0.5;

/** Latency samples kept per model for the percentiles (the most recent ones). */
const LATENCY_SAMPLES = 2048;

/** The figures of a shadow trial (README, "Shadow trial"): the reported `candidate` minus identity. */
export interface ComparisonFigures {
  frames: number;
  /** Share of compared frames where both models gave the same frame label; null before any. */
  agreement: number | null;
  flips: { okToDefect: number; defectToOk: number };
  /** active frame label → candidate frame label → frames. */
  confusion: Record<string, Record<string, number>>;
  /** Detectors: 2·matched / (active boxes + candidate boxes); null for classifiers or no boxes. */
  boxAgreement: number | null;
  latencyMs: {
    active: { p50: number | null; p99: number | null };
    candidate: { p50: number | null; p99: number | null };
  };
}

/**
 * The label a frame is filed under: the top class of a classifier, the highest-scoring detection
 * of a detector (`(none)` when it detects nothing).
 */
export function frameLabel(p: FramePrediction): string {
  if (p.classification?.[0]) return p.classification[0].label;
  if (p.detections) return p.detections[0]?.label ?? NO_DETECTION;
  return NO_DETECTION;
}

export function iou(a: Box, b: Box): number {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / (a.width * a.height + b.width * b.height - inter);
}

/**
 * Boxes of the same label matched one to one at IoU ≥ 0.5, greedily by the active model's score
 * order (the way detection benchmarks match predictions to ground truth).
 */
export function matchBoxes(active: Detection[], candidate: Detection[]): number {
  const used = new Set<number>();
  let matched = 0;
  for (const a of active) {
    let best = -1;
    let bestIou = BOX_IOU;
    candidate.forEach((c, i) => {
      if (used.has(i) || c.label !== a.label) return;
      const v = iou(a.box, c.box);
      if (v >= bestIou) {
        best = i;
        bestIou = v;
      }
    });
    if (best >= 0) {
      used.add(best);
      matched++;
    }
  }
  return matched;
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const v = sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return Math.round(v * 1000) / 1000;
}

/** A bounded window of latency samples. */
class Latencies {
  private readonly samples: number[] = [];
  private next = 0;

  add(ms: number): void {
    if (this.samples.length < LATENCY_SAMPLES) this.samples.push(ms);
    else this.samples[this.next] = ms;
    this.next = (this.next + 1) % LATENCY_SAMPLES;
  }

  figures(): { p50: number | null; p99: number | null } {
    const sorted = [...this.samples].sort((a, b) => a - b);
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
  }
}

/**
 * Running comparison of the candidate against the active model over the frames both scored.
 * Pure bookkeeping: no I/O, no timers; the trial feeds it and reads its figures.
 */
export class ShadowComparison {
  private frames = 0;
  private agreed = 0;
  private okToDefect = 0;
  private defectToOk = 0;
  private readonly confusion = new Map<string, Map<string, number>>();
  private boxesMatched = 0;
  private boxesTotal = 0;
  private detector = false;
  private readonly activeMs = new Latencies();
  private readonly candidateMs = new Latencies();

  /** Adds one frame; returns what it showed (for the metrics). */
  add(
    active: FramePrediction,
    candidate: FramePrediction,
    latency: { activeMs: number; candidateMs: number },
  ): { agreed: boolean; flip: 'okToDefect' | 'defectToOk' | null } {
    this.frames++;
    const a = frameLabel(active);
    const c = frameLabel(candidate);
    const agreed = a === c;
    if (agreed) this.agreed++;
    let row = this.confusion.get(a);
    if (!row) this.confusion.set(a, (row = new Map<string, number>()));
    row.set(c, (row.get(c) ?? 0) + 1);
    let flip: 'okToDefect' | 'defectToOk' | null = null;
    if (!active.defect && candidate.defect) flip = 'okToDefect';
    if (active.defect && !candidate.defect) flip = 'defectToOk';
    if (flip === 'okToDefect') this.okToDefect++;
    if (flip === 'defectToOk') this.defectToOk++;
    if (active.detections || candidate.detections) {
      this.detector = true;
      const ad = active.detections ?? [];
      const cd = candidate.detections ?? [];
      this.boxesMatched += matchBoxes(ad, cd);
      this.boxesTotal += ad.length + cd.length;
    }
    this.activeMs.add(latency.activeMs);
    this.candidateMs.add(latency.candidateMs);
    return { agreed, flip };
  }

  get agreement(): number | null {
    return this.frames === 0 ? null : this.agreed / this.frames;
  }

  figures(): ComparisonFigures {
    const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 10000) / 10000);
    return {
      frames: this.frames,
      agreement: round(this.agreement),
      flips: { okToDefect: this.okToDefect, defectToOk: this.defectToOk },
      confusion: Object.fromEntries(
        [...this.confusion].map(([a, row]) => [a, Object.fromEntries(row)] as const),
      ),
      boxAgreement:
        this.detector && this.boxesTotal > 0 ? round((2 * this.boxesMatched) / this.boxesTotal) : null,
      latencyMs: { active: this.activeMs.figures(), candidate: this.candidateMs.figures() },
    };
  }
}
