import { REASON_VALUE, type CaptureReason, type CaptureSettings } from './settings.js';

/** The fields of a scored frame the rules read (the engine's ScoredFrame fits this shape). */
export interface RuleInput {
  cameraId: string | null;
  prediction: {
    defect: boolean;
    classification?: { label: string; score: number }[];
    detections?: { label: string; score: number }[];
  };
}

export type Decision =
  | { take: true; reason: CaptureReason; rate: number; label: string; camera: string }
  | { take: false; skipped?: 'quota-camera' | 'quota-label'; reason?: CaptureReason };

/** The label a frame counts against for `perLabelPerHour`: its top class or its best detection. */
export function frameLabel(p: RuleInput['prediction']): string {
  const top = p.classification?.[0]?.label;
  if (top !== undefined) return top;
  let best: { label: string; score: number } | undefined;
  for (const d of p.detections ?? []) if (!best || d.score > best.score) best = d;
  return best?.label ?? 'none';
}

function inBand(p: RuleInput['prediction'], band: [number, number]): boolean {
  const [lo, hi] = band;
  const top = p.classification?.[0]?.score;
  if (top !== undefined && top >= lo && top <= hi) return true;
  return (p.detections ?? []).some((d) => d.score >= lo && d.score <= hi);
}

function matches(rule: CaptureSettings['rules'][number], p: RuleInput['prediction']): boolean {
  switch (rule.reason) {
    case 'defect':
      return p.defect;
    case 'uncertain':
      return inBand(p, rule.scoreBand ?? [0.3, 0.7]);
    case 'sample':
      return true;
  }
}

/**
 * Decides whether a scored frame is captured, and why. Rules are tried in value order (defect,
 * uncertain, sample), whatever order the twin lists them in; the first that matches and wins its
 * rate draw takes the frame. Then the hourly quotas per camera and per label apply (clock hours,
 * so a flood in one hour never starves the next). Pure apart from the counters it keeps.
 */
export class CaptureRules {
  private hour = -1;
  private readonly perCamera = new Map<string, number>();
  private readonly perLabel = new Map<string, number>();

  constructor(private readonly random: () => number = Math.random) {}

  decide(frame: RuleInput, settings: CaptureSettings, now = Date.now()): Decision {
    const rules = [...settings.rules].sort((a, b) => REASON_VALUE[b.reason] - REASON_VALUE[a.reason]);
    const rule = rules.find((r) => matches(r, frame.prediction) && r.rate > 0 && this.random() < r.rate);
    if (!rule) return { take: false };
    const hour = Math.floor(now / 3_600_000);
    if (hour !== this.hour) {
      this.hour = hour;
      this.perCamera.clear();
      this.perLabel.clear();
    }
    const camera = frame.cameraId ?? 'unknown';
    const label = frameLabel(frame.prediction);
    const c = this.perCamera.get(camera) ?? 0;
    if (c >= settings.perCameraPerHour) return { take: false, skipped: 'quota-camera', reason: rule.reason };
    const l = this.perLabel.get(label) ?? 0;
    if (l >= settings.perLabelPerHour) return { take: false, skipped: 'quota-label', reason: rule.reason };
    this.perCamera.set(camera, c + 1);
    this.perLabel.set(label, l + 1);
    return { take: true, reason: rule.reason, rate: rule.rate, label, camera };
  }

  /** Gives back a quota slot when a taken frame was not stored after all (budget, disk error). */
  release(camera: string, label: string): void {
    const c = this.perCamera.get(camera);
    if (c) this.perCamera.set(camera, c - 1);
    const l = this.perLabel.get(label);
    if (l) this.perLabel.set(label, l - 1);
  }
}
