import { describe, it, expect } from 'vitest';
import { iou, nmsClasswise, type NmsCandidate } from '../../src/scoring/nms.js';

function cand(x1: number, y1: number, x2: number, y2: number, score: number, cls = 0): NmsCandidate {
  return { x1, y1, x2, y2, score, cls };
}

describe('iou', () => {
  it('is 1 for identical boxes and 0 for disjoint or touching ones', () => {
    expect(iou(cand(0, 0, 10, 10, 1), cand(0, 0, 10, 10, 1))).toBe(1);
    expect(iou(cand(0, 0, 10, 10, 1), cand(20, 20, 30, 30, 1))).toBe(0);
    // Sharing an edge: intersection width 0.
    expect(iou(cand(0, 0, 10, 10, 1), cand(10, 0, 20, 10, 1))).toBe(0);
  });

  it('matches hand-computed overlaps', () => {
    // [0,0,10,10] vs [1,0,11,10]: inter 9×10 = 90, union 100 + 100 - 90 = 110 → 9/11.
    expect(iou(cand(0, 0, 10, 10, 1), cand(1, 0, 11, 10, 1))).toBeCloseTo(9 / 11, 12);
    // [0,0,10,10] vs [5,0,15,10]: inter 50, union 150 → 1/3.
    expect(iou(cand(0, 0, 10, 10, 1), cand(5, 0, 15, 10, 1))).toBeCloseTo(1 / 3, 12);
    // [0,0,10,10] vs [0,0,10,5] (contained): inter 50, union 100 → 0.5 exactly.
    expect(iou(cand(0, 0, 10, 10, 1), cand(0, 0, 10, 5, 1))).toBe(0.5);
    // [0,0,4,4] vs [2,2,6,6]: inter 2×2 = 4, union 16 + 16 - 4 = 28 → 1/7.
    expect(iou(cand(0, 0, 4, 4, 1), cand(2, 2, 6, 6, 1))).toBeCloseTo(1 / 7, 12);
  });

  it('is 0 for empty boxes', () => {
    expect(iou(cand(5, 5, 5, 5, 1), cand(0, 0, 10, 10, 1))).toBe(0);
    expect(iou(cand(5, 5, 5, 5, 1), cand(5, 5, 5, 5, 1))).toBe(0);
  });
});

describe('nmsClasswise', () => {
  it('suppresses an overlapping lower-scoring box of the same class', () => {
    // IoU 9/11 ≈ 0.818 > 0.45 → index 1 suppressed.
    const boxes = [cand(0, 0, 10, 10, 0.9), cand(1, 0, 11, 10, 0.8)];
    expect(nmsClasswise(boxes, 0.45, 100)).toEqual([0]);
  });

  it('keeps overlapping boxes of different classes', () => {
    const boxes = [cand(0, 0, 10, 10, 0.9, 0), cand(1, 0, 11, 10, 0.8, 1)];
    expect(nmsClasswise(boxes, 0.45, 100)).toEqual([0, 1]);
  });

  it('returns indices by score descending, whatever the input order', () => {
    const boxes = [cand(0, 0, 10, 10, 0.3), cand(100, 0, 110, 10, 0.9), cand(200, 0, 210, 10, 0.6)];
    expect(nmsClasswise(boxes, 0.45, 100)).toEqual([1, 2, 0]);
  });

  it('keeps a box whose IoU is exactly at the threshold, suppresses it just above', () => {
    // IoU = 0.5 exactly (see iou test).
    const boxes = [cand(0, 0, 10, 10, 0.9), cand(0, 0, 10, 5, 0.8)];
    expect(nmsClasswise(boxes, 0.5, 100)).toEqual([0, 1]);
    expect(nmsClasswise(boxes, 0.49, 100)).toEqual([0]);
  });

  it('is greedy: a suppressed box does not suppress others', () => {
    // A=[0,0,10,10] .9, B=[3,0,13,10] .8, C=[6,0,16,10] .7.
    // A–B: inter 70, union 130 → 0.538 > 0.45 → B suppressed.
    // A–C: inter 40, union 160 → 0.25 ≤ 0.45 → C kept (B would have suppressed it: 0.538).
    const boxes = [cand(0, 0, 10, 10, 0.9), cand(3, 0, 13, 10, 0.8), cand(6, 0, 16, 10, 0.7)];
    expect(nmsClasswise(boxes, 0.45, 100)).toEqual([0, 2]);
  });

  it('caps at maxDetections, keeping the highest scores', () => {
    const boxes = [0.5, 0.9, 0.1, 0.7, 0.3].map((s, i) => cand(i * 20, 0, i * 20 + 10, 10, s));
    // Scores by index: 0:.5 1:.9 2:.1 3:.7 4:.3 → order 1, 3, 0, 4, 2; cap 3.
    expect(nmsClasswise(boxes, 0.45, 3)).toEqual([1, 3, 0]);
    expect(nmsClasswise(boxes, 0.45, 0)).toEqual([]);
  });

  it('breaks score ties by index', () => {
    const boxes = [cand(0, 0, 10, 10, 0.5), cand(20, 0, 30, 10, 0.5), cand(1, 0, 11, 10, 0.5)];
    // 0 kept first; 1 kept (disjoint); 2 overlaps 0 with IoU 9/11 → suppressed.
    expect(nmsClasswise(boxes, 0.45, 100)).toEqual([0, 1]);
  });

  it('handles no candidates', () => {
    expect(nmsClasswise([], 0.45, 100)).toEqual([]);
  });
});
