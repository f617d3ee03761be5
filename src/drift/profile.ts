import { FEATURES, type Feature, type ReferenceProfile } from '../scoring/reference.js';
import type { InputFeatures } from './features.js';
import { countInto, histogramOf, labelPsi, psi, psiBaseline, type Histogram } from './psi.js';

export { FEATURES, type Feature, type ReferenceProfile };

/** What one scored frame contributes to a profile. */
export interface FrameSample extends InputFeatures {
  /** Score of the top class (classifier) or of the best detection (0 when none). */
  topScore: number;
  /** The frame's label: top class, or best detection's label. */
  label: string;
}

/** Builds a reference profile from frames scored the way the daemon scores them. */
export function referenceProfile(samples: readonly FrameSample[], bins = 10): ReferenceProfile {
  if (samples.length === 0) throw new Error('a reference profile needs frames');
  const features = Object.fromEntries(
    FEATURES.map(
      (f) =>
        [
          f,
          histogramOf(
            samples.map((s) => s[f]),
            bins,
          ),
        ] as const,
    ),
  ) as Record<Feature, Histogram>;
  const labels: Record<string, number> = {};
  for (const s of samples) labels[s.label] = (labels[s.label] ?? 0) + 1;
  for (const l of Object.keys(labels)) labels[l] = Math.round((labels[l]! / samples.length) * 1e6) / 1e6;
  return { frames: samples.length, features, labels };
}

/** One feature's figure over a window: PSI, what a window this size reads with no drift, and the verdict. */
export interface DriftFigure {
  psi: number;
  baseline: number;
  /** PSI − baseline above the threshold. */
  drifted: boolean;
}

/**
 * A window of the last `size` frames of one model and camera, compared with the reference. Cheap per
 * frame (a bin index per feature); `figures()` costs O(bins).
 */
export class DriftWindow {
  private readonly ring: FrameSample[] = [];
  private next = 0;

  constructor(
    private readonly reference: ReferenceProfile,
    private readonly size: number,
  ) {}

  get frames(): number {
    return this.ring.length;
  }

  add(sample: FrameSample): void {
    if (this.ring.length < this.size) this.ring.push(sample);
    else this.ring[this.next] = sample;
    this.next = (this.next + 1) % this.size;
  }

  /** PSI per feature and for the label mix; null until the window is full. */
  figures(threshold: number): Record<Feature | 'labels', DriftFigure> | null {
    const m = this.ring.length;
    if (m < this.size) return null;
    const n = this.reference.frames;
    const judge = (value: number, bins: number): DriftFigure => {
      const baseline = psiBaseline(bins, n, m);
      return { psi: round(value), baseline: round(baseline), drifted: value - baseline > threshold };
    };
    const out = {} as Record<Feature | 'labels', DriftFigure>;
    for (const f of FEATURES) {
      const h = this.reference.features[f];
      out[f] = judge(
        psi(
          h.counts,
          countInto(
            h.edges,
            this.ring.map((s) => s[f]),
          ),
        ),
        h.counts.length,
      );
    }
    const mix: Record<string, number> = {};
    for (const s of this.ring) mix[s.label] = (mix[s.label] ?? 0) + 1;
    const labels = labelPsi(this.reference.labels, n, mix);
    out.labels = judge(labels.psi, labels.bins);
    return out;
  }
}

const round = (v: number): number => Math.round(v * 10000) / 10000;
