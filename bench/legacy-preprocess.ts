import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import type { InputSpec } from '../src/scoring/manifest.js';
import { geometryFor } from '../src/scoring/geometry.js';
import type { FrameInput, PreparedFrame, PreprocessLimits } from '../src/scoring/preprocess.js';
import { tensorize } from '../src/scoring/tensor.js';

/**
 * The pre-processing path edge-scorer had before the decode work (bench/README.md, "Decoding"),
 * for encoded JPEG/PNG/WebP/TIFF frames: a libvips header read (metadata()), then a second sharp
 * pipeline that decodes and resizes. Kept in the bench only, so a run measures before and after
 * side by side on the same machine, and test/unit/preprocess.test.ts compares their tensors.
 */
export async function legacyPrepareFrame(
  frame: FrameInput,
  spec: InputSpec,
  limits: PreprocessLimits,
): Promise<PreparedFrame> {
  const started = performance.now();
  const options = { failOn: 'warning', sequentialRead: true } as const;
  const meta = await sharp(frame.body, { ...options, limitInputPixels: false }).metadata();
  const g = geometryFor(spec.resize, meta.width, meta.height, spec.width, spec.height);
  let image = sharp(frame.body, { ...options, limitInputPixels: limits.maxPixels }).resize(
    g.resizeWidth,
    g.resizeHeight,
    { fit: 'fill' },
  );
  if (spec.resize === 'letterbox' && (g.padLeft || g.padTop || g.padRight || g.padBottom)) {
    const v = spec.padValue;
    image = image.extend({
      top: g.padTop,
      bottom: g.padBottom,
      left: g.padLeft,
      right: g.padRight,
      background: { r: v, g: v, b: v, alpha: 1 },
    });
  } else if (
    spec.resize === 'center-crop' &&
    (g.resizeWidth !== spec.width || g.resizeHeight !== spec.height)
  ) {
    image = image.extract({ left: g.cropLeft, top: g.cropTop, width: spec.width, height: spec.height });
  }
  const { data, info } = await image
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  const { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY } = g;
  return {
    data: tensorize(data, info.channels, 'rgb', spec),
    geometry: { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY },
    preprocessMs: performance.now() - started,
  };
}
