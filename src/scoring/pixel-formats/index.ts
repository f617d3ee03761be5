import { EdgeError, ErrorCodes } from '../../errors.js';
import { bayerBg8, bayerGb8, bayerGr8, bayerRg8 } from './bayer.js';
import { bgr8 } from './bgr8.js';
import { mono12p } from './mono12p.js';
import { mono16 } from './mono16.js';
import { mono8 } from './mono8.js';
import { rgb8 } from './rgb8.js';
import type { DecodedPixels, PixelFormat } from './types.js';
import { yuv422Uyvy, yuv422Yuyv } from './yuv422.js';

export type { DecodedPixels, PixelFormat } from './types.js';

/** Every raw pixel format `X-Frame-Format` may name (README, "Raw pixel formats"); one line each. */
const REGISTRY: ReadonlyMap<string, PixelFormat> = new Map(
  [mono8, rgb8, bgr8, mono16, mono12p, bayerRg8, bayerGr8, bayerGb8, bayerBg8, yuv422Yuyv, yuv422Uyvy].map(
    (f) => [f.name, f],
  ),
);

/** The names `X-Frame-Format` accepts, in registry order. */
export const PIXEL_FORMAT_NAMES: readonly string[] = [...REGISTRY.keys()];

export function pixelFormat(name: string): PixelFormat | undefined {
  return REGISTRY.get(name);
}

/** A raw frame as its headers describe it. `bits` defaults to the format's first. */
export interface RawDescription {
  format: string;
  width: number;
  height: number;
  bits?: number;
}

/**
 * Checks a raw body against its declared format and size and decodes it to 8-bit pixels.
 * Throws RAW_HEADERS_INVALID (unknown format, bits the format cannot carry, odd width where it
 * must be even) or RAW_SIZE_MISMATCH (the body length is not what the format and size need).
 */
export function decodeRaw(body: Uint8Array, raw: RawDescription): DecodedPixels {
  const f = REGISTRY.get(raw.format);
  if (!f) {
    throw new EdgeError(
      ErrorCodes.RAW_HEADERS_INVALID,
      `X-Frame-Format must be one of ${PIXEL_FORMAT_NAMES.join(', ')}`,
    );
  }
  const bits = raw.bits ?? f.bits[0]!;
  if (!f.bits.includes(bits)) {
    throw new EdgeError(
      ErrorCodes.RAW_HEADERS_INVALID,
      `X-Frame-Bits for ${f.name} must be one of ${f.bits.join(', ')}`,
    );
  }
  const { width, height } = raw;
  if (f.evenWidth && width % 2 !== 0) {
    throw new EdgeError(ErrorCodes.RAW_HEADERS_INVALID, `${f.name} frames need an even X-Frame-Width`);
  }
  const expected = f.byteLength(width, height);
  if (body.length !== expected) {
    throw new EdgeError(
      ErrorCodes.RAW_SIZE_MISMATCH,
      `a ${width}x${height} ${f.name} frame is ${expected} bytes; the body has ${body.length}`,
      { expected, actual: body.length },
    );
  }
  return f.decode(body, width, height, bits);
}
