import { sharpOf } from '../scoring/frame-image.js';
import type { FrameInput } from '../scoring/preprocess.js';

/** What the drift profile measures of a frame's input (docs/drift.md). */
export interface InputFeatures {
  /** Mean luma, 0..255. */
  luma: number;
  /** Luma standard deviation: contrast. */
  contrast: number;
  /** Variance of the 4-neighbour Laplacian of luma: focus (falls as a camera blurs). */
  sharpness: number;
}

/**
 * The side of the luma thumbnail the features are computed on. Fixed, so figures from frames of any
 * size compare; small, so a JPEG decodes with shrink-on-load and the pass costs little next to
 * inference. Sharpness is the thumbnail's, which is what a reference computed the same way holds.
 */
export const FEATURE_SIDE = 128;

/** Features of luma pixels (one byte each, row-major). */
export function featuresOfLuma(pixels: Uint8Array, width: number, height: number): InputFeatures {
  let sum = 0;
  let sumSq = 0;
  for (const p of pixels) {
    sum += p;
    sumSq += p * p;
  }
  const count = width * height;
  const luma = sum / count;
  const contrast = Math.sqrt(Math.max(0, sumSq / count - luma * luma));
  let lSum = 0;
  let lSq = 0;
  let n = 0;
  for (let y = 1; y < height - 1; y++) {
    for (let x = 1; x < width - 1; x++) {
      const i = y * width + x;
      const l = 4 * pixels[i]! - pixels[i - 1]! - pixels[i + 1]! - pixels[i - width]! - pixels[i + width]!;
      lSum += l;
      lSq += l * l;
      n++;
    }
  }
  const lMean = n ? lSum / n : 0;
  const sharpness = n ? lSq / n - lMean * lMean : 0;
  return { luma, contrast, sharpness };
}

/**
 * Decodes a posted frame to a FEATURE_SIDE² luma thumbnail (sharp, on the libuv pool; JPEG with
 * shrink-on-load) and measures it. Throws for raw formats sharp does not read.
 */
export async function frameFeatures(frame: FrameInput): Promise<InputFeatures> {
  const { data, info } = await sharpOf(frame)
    .greyscale()
    .resize(FEATURE_SIDE, FEATURE_SIDE, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return featuresOfLuma(data, info.width, info.height);
}
