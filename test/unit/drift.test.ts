import { describe, expect, it } from 'vitest';
import { frameFeatures } from '../../src/drift/features.js';
import { DriftWindow, referenceProfile, type FrameSample } from '../../src/drift/profile.js';
import { psi, psiBaseline } from '../../src/drift/psi.js';
import { boardFrame, rng } from '../helpers/frames.js';

async function samples(
  count: number,
  seed: number,
  opts: { gain?: number; blur?: number; defectShare?: number } = {},
): Promise<FrameSample[]> {
  const r = rng(seed);
  const out: FrameSample[] = [];
  for (let i = 0; i < count; i++) {
    const features = await frameFeatures({ body: await boardFrame(r, opts), mediaType: 'image/jpeg' });
    out.push({
      ...features,
      topScore: 0.7 + 0.3 * r(),
      label: r() < (opts.defectShare ?? 0.1) ? 'bridge' : 'ok',
    });
  }
  return out;
}

const THRESHOLD = 0.25;
const WINDOW = 100;

function windowOf(reference: ReturnType<typeof referenceProfile>, frames: FrameSample[]) {
  const w = new DriftWindow(reference, WINDOW);
  for (const s of frames) w.add(s);
  return w.figures(THRESHOLD)!;
}

describe('drift', () => {
  it('PSI of two samples of one distribution reads about (B − 1)(1/n + 1/m)', () => {
    const r = rng(3);
    const bins = 10;
    const draws = (k: number): number[] => {
      const c = new Array<number>(bins).fill(0);
      for (let i = 0; i < k; i++) c[Math.floor(r() * bins)]!++;
      return c;
    };
    let total = 0;
    const trials = 300;
    for (let t = 0; t < trials; t++) total += psi(draws(200), draws(100));
    const expected = psiBaseline(bins, 200, 100);
    expect(expected).toBeCloseTo(0.135, 3);
    expect(total / trials).toBeGreaterThan(expected * 0.75);
    expect(total / trials).toBeLessThan(expected * 1.25);
  });

  it('stays under its threshold on frames drawn like the reference and crosses it on shifted ones', async () => {
    const reference = referenceProfile(await samples(200, 1));
    expect(reference.frames).toBe(200);
    expect(reference.features.luma.counts.reduce((a, b) => a + b, 0)).toBe(200);
    expect(reference.labels.ok).toBeGreaterThan(0.8);

    const same = windowOf(reference, await samples(WINDOW, 2));
    for (const [feature, f] of Object.entries(same)) {
      expect({ feature, drifted: f.drifted }).toEqual({ feature, drifted: false });
      // The figure is reported beside what a window this size reads with no drift.
      expect(f.baseline).toBeGreaterThan(0);
    }

    const darker = windowOf(reference, await samples(WINDOW, 3, { gain: 0.6 }));
    expect(darker.luma.drifted).toBe(true);
    expect(darker.luma.psi).toBeGreaterThan(same.luma.psi + THRESHOLD);
    expect(darker.labels.drifted).toBe(false);

    const blurred = windowOf(reference, await samples(WINDOW, 4, { blur: 2 }));
    expect(blurred.sharpness.drifted).toBe(true);
    expect(blurred.luma.drifted).toBe(false);

    const mix = windowOf(reference, await samples(WINDOW, 5, { defectShare: 0.4 }));
    expect(mix.labels.drifted).toBe(true);
    expect(mix.luma.drifted).toBe(false);
    expect(mix.sharpness.drifted).toBe(false);
  }, 120_000);

  it('has no figures until the window is full', () => {
    const reference = referenceProfile([{ luma: 1, contrast: 1, sharpness: 1, topScore: 1, label: 'ok' }]);
    const w = new DriftWindow(reference, 2);
    w.add({ luma: 1, contrast: 1, sharpness: 1, topScore: 1, label: 'ok' });
    expect(w.figures(THRESHOLD)).toBeNull();
    w.add({ luma: 1, contrast: 1, sharpness: 1, topScore: 1, label: 'ok' });
    expect(w.figures(THRESHOLD)?.luma.drifted).toBe(false);
  });
});
