import { describe, expect, it } from 'vitest';
import { NO_DETECTION, ShadowComparison, iou, matchBoxes } from '../../src/shadow/compare.js';
import type { Detection, FramePrediction } from '../../src/scoring/prediction.js';

const det = (label: string, x: number, y: number, size = 10, score = 0.9): Detection => ({
  label,
  score,
  box: { x, y, width: size, height: size },
});
const detector = (detections: Detection[], defectLabels = ['bridge']): FramePrediction => ({
  defect: detections.some((d) => defectLabels.includes(d.label)),
  detections,
});
const classifier = (label: string, defect: boolean): FramePrediction => ({
  defect,
  classification: [{ label, score: 0.9 }],
});

describe('shadow comparison', () => {
  it('computes IoU of boxes', () => {
    expect(iou({ x: 0, y: 0, width: 10, height: 10 }, { x: 0, y: 0, width: 10, height: 10 })).toBe(1);
    expect(iou({ x: 0, y: 0, width: 10, height: 10 }, { x: 5, y: 0, width: 10, height: 10 })).toBeCloseTo(
      50 / 150,
    );
    expect(iou({ x: 0, y: 0, width: 10, height: 10 }, { x: 20, y: 20, width: 5, height: 5 })).toBe(0);
  });

  it('matches boxes one to one, same label, at IoU ≥ 0.5', () => {
    // Shifted by 2 px: IoU 80/120 ≈ 0.67, a match; by 5 px: 1/3, none; another label: none.
    expect(matchBoxes([det('bridge', 0, 0)], [det('bridge', 2, 0)])).toBe(1);
    expect(matchBoxes([det('bridge', 0, 0)], [det('bridge', 5, 0)])).toBe(0);
    expect(matchBoxes([det('bridge', 0, 0)], [det('missing', 0, 0)])).toBe(0);
    // Two active boxes cannot both take the one candidate box.
    expect(matchBoxes([det('bridge', 0, 0), det('bridge', 1, 0)], [det('bridge', 0, 0)])).toBe(1);
  });

  it('reports box agreement, flips and confusion for a detector', () => {
    const c = new ShadowComparison();
    // Frame 1: both find the same bridge (agree).
    c.add(detector([det('bridge', 0, 0)]), detector([det('bridge', 1, 1)]), { activeMs: 2, candidateMs: 4 });
    // Frame 2: the candidate misses it (defect → ok), and adds a box elsewhere of another label.
    c.add(detector([det('bridge', 50, 50)]), detector([det('missing', 0, 0)]), {
      activeMs: 2,
      candidateMs: 4,
    });
    // Frame 3: neither finds anything.
    c.add(detector([]), detector([]), { activeMs: 3, candidateMs: 5 });
    // Frame 4: the candidate finds a bridge the active model did not (ok → defect).
    c.add(detector([]), detector([det('bridge', 0, 0)]), { activeMs: 3, candidateMs: 5 });
    const f = c.figures();
    expect(f.frames).toBe(4);
    expect(f.agreement).toBe(0.5);
    expect(f.flips).toEqual({ okToDefect: 1, defectToOk: 1 });
    expect(f.confusion).toEqual({
      bridge: { bridge: 1, missing: 1 },
      [NO_DETECTION]: { [NO_DETECTION]: 1, bridge: 1 },
    });
    // 1 matched pair over 2 + 3 boxes: 2·1 / 5.
    expect(f.boxAgreement).toBe(0.4);
    expect(f.latencyMs).toEqual({ active: { p50: 3, p99: 3 }, candidate: { p50: 5, p99: 5 } });
  });

  it('has no box agreement for classifiers and no agreement before any frame', () => {
    const c = new ShadowComparison();
    expect(c.figures()).toMatchObject({ frames: 0, agreement: null, boxAgreement: null });
    c.add(classifier('ok', false), classifier('ok', false), { activeMs: 1, candidateMs: 1 });
    expect(c.figures()).toMatchObject({
      frames: 1,
      agreement: 1,
      boxAgreement: null,
      confusion: { ok: { ok: 1 } },
    });
  });
});
