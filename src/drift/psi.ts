/**
 * Population stability index over frozen bins (docs/drift.md). A reference profile freezes the bin
 * edges of a feature; a window of frames is counted into the same bins and compared with it.
 */

import type { Histogram } from '../scoring/reference.js';

export type { Histogram };

/** Added to every bin's count before PSI, so an empty bin on one side gives a finite figure. */
export const SMOOTHING = 0.5;

/**
 * The bin of `value`: bin i holds (edges[i], edges[i+1]]; values beyond the outer edges fall in the
 * first or last bin, so a shifted window still lands somewhere and shows as drift.
 */
export function binOf(edges: readonly number[], value: number): number {
  const bins = edges.length - 1;
  let lo = 0;
  let hi = bins - 1;
  // The first bin whose upper edge is ≥ value (binary search over the inner edges).
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (value <= edges[mid + 1]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function countInto(edges: readonly number[], values: Iterable<number>): number[] {
  const counts = new Array<number>(edges.length - 1).fill(0);
  for (const v of values) counts[binOf(edges, v)]!++;
  return counts;
}

/** PSI = Σ (qᵢ − pᵢ)·ln(qᵢ/pᵢ), p the reference's shares, q the window's, both smoothed. */
export function psi(reference: readonly number[], window: readonly number[]): number {
  if (reference.length !== window.length) throw new Error('PSI needs the same bins on both sides');
  const b = reference.length;
  const n = reference.reduce((a, c) => a + c, 0) + b * SMOOTHING;
  const m = window.reduce((a, c) => a + c, 0) + b * SMOOTHING;
  let sum = 0;
  for (let i = 0; i < b; i++) {
    const p = (reference[i]! + SMOOTHING) / n;
    const q = (window[i]! + SMOOTHING) / m;
    sum += (q - p) * Math.log(q / p);
  }
  return sum;
}

/**
 * What PSI reads with no drift at all, for B bins and samples of n and m: about (B − 1)(1/n + 1/m)
 * (PSI of two samples of one distribution is a χ²-like statistic with B − 1 degrees of freedom).
 * A window of 100 frames over 10 bins reads ~0.1 by chance alone, so a threshold is judged on
 * PSI minus this baseline.
 */
export function psiBaseline(bins: number, n: number, m: number): number {
  if (n <= 0 || m <= 0) return Infinity;
  return (bins - 1) * (1 / n + 1 / m);
}

/**
 * Frozen edges for a reference sample: quantile cut points (`bins` equal shares where the data
 * allow), outer edges at the sample's min and max. Ties collapse bins, so a feature with few
 * distinct values gets fewer bins rather than empty ones.
 */
export function quantileEdges(values: readonly number[], bins = 10): number[] {
  if (values.length === 0) throw new Error('a reference needs at least one value');
  const sorted = [...values].sort((a, b) => a - b);
  const edges = [sorted[0]!];
  for (let i = 1; i < bins; i++) {
    const cut = sorted[Math.min(sorted.length - 1, Math.floor((i * sorted.length) / bins))]!;
    if (cut > edges[edges.length - 1]!) edges.push(cut);
  }
  const max = sorted[sorted.length - 1]!;
  if (max > edges[edges.length - 1]! || edges.length === 1) edges.push(max === edges[0] ? max + 1 : max);
  return edges;
}

/** A reference histogram of `values` with frozen quantile edges. */
export function histogramOf(values: readonly number[], bins = 10): Histogram {
  const edges = quantileEdges(values, bins);
  return { edges, counts: countInto(edges, values) };
}

/**
 * PSI of a label mix against reference shares (`{"ok":0.93,…}`): each label is a bin, labels the
 * reference never saw share one extra bin. `n` is the reference's frame count.
 */
export function labelPsi(
  reference: Readonly<Record<string, number>>,
  n: number,
  window: Readonly<Record<string, number>>,
): { psi: number; bins: number } {
  const labels = Object.keys(reference);
  const other = Object.entries(window)
    .filter(([l]) => !(l in reference))
    .reduce((a, [, c]) => a + c, 0);
  const ref = [...labels.map((l) => reference[l]! * n), 0];
  const win = [...labels.map((l) => window[l] ?? 0), other];
  return { psi: psi(ref, win), bins: ref.length };
}
