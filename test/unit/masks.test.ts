import { describe, expect, it } from 'vitest';
import { largestContour } from '../../src/scoring/masks.js';

/** A binary image from rows of '#' (on) and '.' (off). */
function image(rows: string[]): { on: Uint8Array; w: number; h: number } {
  const h = rows.length;
  const w = rows[0]!.length;
  const on = new Uint8Array(w * h);
  rows.forEach((r, y) => [...r].forEach((ch, x) => (on[y * w + x] = ch === '#' ? 1 : 0)));
  return { on, w, h };
}

const contour = (rows: string[]): [number, number][] => {
  const { on, w, h } = image(rows);
  return largestContour(on, w, h);
};

describe('largestContour (the outer contour OpenCV findContours gives with CHAIN_APPROX_SIMPLE)', () => {
  it('a rectangle: its four corner pixels, clockwise from the top-left', () => {
    expect(contour(['......', '.####.', '.####.', '.####.', '......'])).toEqual([
      [1, 1],
      [4, 1],
      [4, 3],
      [1, 3],
    ]);
  });

  it('an L shape: every corner, the inner one included', () => {
    expect(contour(['##...', '##...', '#####', '#####'])).toEqual([
      [0, 0],
      [1, 0],
      [1, 1],
      [2, 2],
      [4, 2],
      [4, 3],
      [0, 3],
    ]);
  });

  it('a diagonal run keeps its ends only; a single pixel is itself; nothing is empty', () => {
    expect(contour(['#...', '.#..', '..#.', '...#'])).toEqual([
      [0, 0],
      [3, 3],
    ]);
    expect(contour(['...', '.#.', '...'])).toEqual([[1, 1]]);
    expect(contour(['...', '...'])).toEqual([]);
  });

  it('of two parts, the larger one', () => {
    expect(contour(['##.....', '##..###', '....###', '....###'])).toEqual([
      [4, 1],
      [6, 1],
      [6, 3],
      [4, 3],
    ]);
  });
});
