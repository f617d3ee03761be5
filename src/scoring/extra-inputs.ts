import type { FrameGeometry } from './geometry.js';

/**
 * Graph inputs besides the image that the daemon knows how to feed (docs/model-families.md,
 * "RT-DETR, lyuwenyu/RT-DETR export"): `orig_target_sizes`, int64 [N, 2] = (width, height) of
 * each frame, which the lyuwenyu/RT-DETR post-processor multiplies its normalised boxes by.
 */
export const ORIG_TARGET_SIZES = 'orig_target_sizes';

/** The image input among the graph's inputs: the first one that is not a known extra input. */
export function imageInputIndex(inputs: readonly { name: string }[]): number {
  const i = inputs.findIndex((x) => x.name !== ORIG_TARGET_SIZES);
  return i < 0 ? 0 : i;
}

/** Whether every input other than the image is one the daemon feeds. */
export function extraInputsKnown(
  inputs: readonly { name: string; dims: readonly (number | string)[] }[],
): boolean {
  return inputs.every(
    (x, i) => i === imageInputIndex(inputs) || (x.name === ORIG_TARGET_SIZES && x.dims.length === 2),
  );
}

/** `orig_target_sizes` for a batch: each frame's (width, height); padding frames get (1, 1). */
export function origTargetSizes(geometries: readonly FrameGeometry[], batch: number): BigInt64Array {
  const out = new BigInt64Array(batch * 2).fill(1n);
  geometries.forEach((g, n) => {
    out[2 * n] = BigInt(g.frameWidth);
    out[2 * n + 1] = BigInt(g.frameHeight);
  });
  return out;
}
