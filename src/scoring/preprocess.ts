import { performance } from 'node:perf_hooks';
import sharp, { type Metadata, type OutputInfo, type Sharp } from 'sharp';
import { EdgeError, ErrorCodes } from '../errors.js';
import { readBmp } from './bmp.js';
import { jpegSize } from './jpeg-header.js';
import type { InputSpec } from './manifest.js';
import { decodeSmallPng, isPng, pngSize, smallPngSize } from './png-small.js';
import { geometryFor, type FrameGeometry } from './geometry.js';
import { decodeRaw } from './pixel-formats/index.js';
import type { PixelSource, Placement } from './resample.js';
import { inMemory, smallFrameTensor, tensorize, type InputTensorData } from './tensor.js';

/** A name from the pixel-format registry (`scoring/pixel-formats/`). */
export type RawFormat = string;

/** Media types accepted on the scoring routes; anything else is 415. */
export const ACCEPTED_MEDIA_TYPES = [
  'image/jpeg',
  'image/png',
  'image/webp',
  'image/tiff',
  'image/bmp',
  'application/octet-stream',
] as const;
export type AcceptedMediaType = (typeof ACCEPTED_MEDIA_TYPES)[number];

/** Formats sharp may decode for us; it can also read SVG, GIF, HEIF..., which we refuse. */
const DECODABLE = new Set(['jpeg', 'png', 'webp', 'tiff']);

export interface RawFrameInfo {
  format: RawFormat;
  width: number;
  height: number;
  /** Significant bits (`X-Frame-Bits`); the format's default when absent. */
  bits?: number;
}

export type { InputTensorData } from './tensor.js';

export interface FrameInput {
  body: Buffer;
  mediaType: AcceptedMediaType;
  /** Required for application/octet-stream. */
  raw?: RawFrameInfo;
}

export interface PreparedFrame {
  /** One frame in the model's layout and dtype, without the batch dimension. */
  data: InputTensorData;
  geometry: FrameGeometry;
  preprocessMs: number;
}

/**
 * A small PNG left whole for the inference worker, which decodes it straight into its slot of the
 * batch tensor (docs/architecture.md, "The path of a frame"): here only its header is read.
 */
export interface DeferredFrame {
  png: Buffer;
  placement: Placement;
  geometry: FrameGeometry;
  /** Reading the header; the worker adds its decode. */
  preprocessMs: number;
}

export interface PreprocessLimits {
  maxPixels: number;
}

interface Source {
  /** The frame as a sharp pipeline, or (small frames) as pixels in memory or a small PNG. */
  image?: Sharp;
  pixels?: PixelSource;
  png?: Buffer;
  width: number;
  height: number;
  /** Channel order of the pixels (3-channel images). */
  order: 'rgb' | 'bgr';
}

const tooLarge = (width: number, height: number, maxPixels: number): EdgeError =>
  new EdgeError(
    ErrorCodes.FRAME_TOO_LARGE,
    `frame is ${width}x${height} pixels; the limit is ${maxPixels} pixels`,
    {
      width,
      height,
      maxPixels,
    },
  );

const SHARP_OPTIONS = { failOn: 'warning', sequentialRead: true } as const;

// libvips keeps the results of recent operations (by default up to 50 MB, 100 operations) for
// reuse. Every frame is new, so nothing is ever reused: the cache would only hold memory.
sharp.cache(false);

const undecodable = (): EdgeError =>
  new EdgeError(ErrorCodes.FRAME_UNDECODABLE, 'the frame could not be decoded (truncated or corrupt)');

/** A small grey (one byte a pixel) or colour JPEG's pixels, decoded by libvips. */
async function decodeSmallJpeg(
  body: Buffer,
  components: 1 | 3,
  limits: PreprocessLimits,
): Promise<PixelSource> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    let image = sharp(body, { ...SHARP_OPTIONS, limitInputPixels: limits.maxPixels });
    // sharp would write a grey JPEG's pixels as sRGB, three equal bytes each.
    if (components === 1) image = image.toColourspace('b-w');
    out = await image.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch {
    throw undecodable();
  }
  const { width, height, channels } = out.info;
  if (channels !== 1 && channels !== 3)
    throw new EdgeError(ErrorCodes.INTERNAL, `a JPEG decoded to ${channels} channels`);
  return { data: out.data, width, height, channels };
}

/** Opens the frame, checking format and size from its header before any decode. */
async function openSource(frame: FrameInput, limits: PreprocessLimits): Promise<Source> {
  const { body } = frame;
  if (body.length === 0) throw new EdgeError(ErrorCodes.FRAME_UNDECODABLE, 'the frame body is empty');
  if (frame.mediaType === 'application/octet-stream') return openRaw(body, frame.raw, limits);
  // The bytes decide: a BMP is recognised by its signature under any image type, and a body sent
  // as image/bmp that is not one goes to the general decoder (which refuses what it must).
  const isBmp = body.length >= 2 && body[0] === 0x42 && body[1] === 0x4d;
  if (isBmp) {
    const bmp = readBmp(body, limits.maxPixels);
    if (inMemory(bmp.width, bmp.height)) {
      const { width, height, channels, bottomUp, data, order } = bmp;
      return { pixels: { data, width, height, channels, bottomUp }, width, height, order };
    }
    let image = sharp(bmp.data, { raw: { width: bmp.width, height: bmp.height, channels: bmp.channels } });
    if (bmp.channels === 4) {
      // The fourth byte is padding, not alpha: drop it before resize would premultiply by it.
      const rgb = await image.removeAlpha().raw().toBuffer();
      image = sharp(rgb, { raw: { width: bmp.width, height: bmp.height, channels: 3 } });
    }
    if (bmp.bottomUp) image = image.flip();
    return { image, width: bmp.width, height: bmp.height, order: bmp.order };
  }
  // JPEG and PNG (nearly every frame) are sized from their header here, in microseconds, and
  // opened once; other formats ask libvips for the header first.
  const jpeg = jpegSize(body);
  const header = jpeg ?? pngSize(body);
  if (header) {
    const { width, height } = header;
    if (width * height > limits.maxPixels) throw tooLarge(width, height, limits.maxPixels);
    if (inMemory(width, height) && isPng(body)) return { png: body, width, height, order: 'rgb' };
    if (inMemory(width, height) && (jpeg?.components === 1 || jpeg?.components === 3)) {
      // A small grey or colour JPEG: libvips decodes it and the kernels resize it here, as a small
      // PNG: a libvips resize pipeline costs more than such a frame's pixels. (A CMYK one goes to
      // the pipeline, which converts its colours after the resize.)
      const pixels = await decodeSmallJpeg(body, jpeg.components, limits);
      return { pixels, width, height, order: 'rgb' };
    }
    // sharp shrinks a JPEG on load (libjpeg's DCT scaling, 1/2 to 1/8) when the resize below is
    // its first operation on a fresh pipeline: keep it first.
    return {
      image: sharp(body, { ...SHARP_OPTIONS, limitInputPixels: limits.maxPixels }),
      width,
      height,
      order: 'rgb',
    };
  }
  let meta: Metadata;
  try {
    // Header only: no pixel limit here, the size is checked below with a code of its own.
    meta = await sharp(body, { ...SHARP_OPTIONS, limitInputPixels: false }).metadata();
  } catch {
    throw new EdgeError(ErrorCodes.FRAME_UNDECODABLE, `the body is not a decodable ${frame.mediaType} frame`);
  }
  if (!DECODABLE.has(meta.format)) {
    throw new EdgeError(
      ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
      `frame content is ${meta.format}, which is not accepted`,
      {
        detected: meta.format,
      },
    );
  }
  const { width, height } = meta;
  if (!width || !height)
    throw new EdgeError(ErrorCodes.FRAME_UNDECODABLE, 'the frame header has no dimensions');
  if (width * height > limits.maxPixels) throw tooLarge(width, height, limits.maxPixels);
  const image = sharp(body, { ...SHARP_OPTIONS, limitInputPixels: limits.maxPixels });
  return { image, width, height, order: 'rgb' };
}

function openRaw(body: Buffer, raw: RawFrameInfo | undefined, limits: PreprocessLimits): Source {
  if (!raw) {
    throw new EdgeError(
      ErrorCodes.RAW_HEADERS_INVALID,
      'application/octet-stream frames need X-Frame-Format, X-Frame-Width and X-Frame-Height',
    );
  }
  const { width, height } = raw;
  if (width * height > limits.maxPixels) throw tooLarge(width, height, limits.maxPixels);
  const px = decodeRaw(body, raw);
  if (inMemory(width, height)) {
    return {
      pixels: { data: px.data, width, height, channels: px.channels },
      width,
      height,
      order: px.order,
    };
  }
  return {
    image: sharp(px.data, { raw: { width, height, channels: px.channels } }),
    width,
    height,
    order: px.order,
  };
}

/**
 * Decodes a frame and turns it into the input tensor its model's manifest describes: resize
 * (stretch, letterbox, center-crop), colour order, layout, dtype and normalisation. Board-sized
 * frames are decoded and resized in sharp (libuv pool, off the event loop); frames of up to
 * 65,536 pixels that need no libvips (raw, BMP, plain PNG) are decoded and resized here, where
 * they cost a fraction of a pipeline's set-up (bench/README.md, "Decoding").
 */
/**
 * The frame as a {@link DeferredFrame} when it is a PNG the in-memory path takes by its header
 * (8-bit grey, RGB or palette, not interlaced, up to 65,536 pixels: scoring/png-small.ts); otherwise
 * undefined, and the caller prepares it with {@link prepareFrame}. A body the worker's decoder
 * then refuses after all (a chunk it does not know, a bad CRC) comes back to `prepareFrame`, which
 * gives it to sharp: decoded or refused as before.
 */
export function deferSmallPng(
  frame: FrameInput,
  spec: InputSpec,
  limits: PreprocessLimits,
): DeferredFrame | undefined {
  const started = performance.now();
  const { body } = frame;
  const size = frame.mediaType === 'application/octet-stream' ? undefined : smallPngSize(body);
  if (!size || size.width * size.height > limits.maxPixels) return undefined;
  const { width, height } = size;
  const g = geometryFor(spec.resize, width, height, spec.width, spec.height);
  const { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY } = g;
  return {
    png: body,
    placement: g,
    geometry: { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY },
    preprocessMs: performance.now() - started,
  };
}

export async function prepareFrame(
  frame: FrameInput,
  spec: InputSpec,
  limits: PreprocessLimits,
): Promise<PreparedFrame> {
  const started = performance.now();
  const src = await openSource(frame, limits);
  const g = geometryFor(spec.resize, src.width, src.height, spec.width, spec.height);
  const { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY } = g;
  const geometry = { frameWidth, frameHeight, scaleX, scaleY, offsetX, offsetY };
  if (src.pixels || src.png) {
    const data = prepareInMemory(src, g, spec);
    if (data) return { data, geometry, preprocessMs: performance.now() - started };
    // A PNG the JavaScript decoder does not take: sharp decodes it, or refuses it.
    src.image = sharp(frame.body, { ...SHARP_OPTIONS, limitInputPixels: limits.maxPixels });
  }
  let image = src.image!.resize(g.resizeWidth, g.resizeHeight, { fit: 'fill' });
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
  let pixels: { data: Buffer; info: OutputInfo };
  try {
    pixels = await image.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    if (err instanceof EdgeError) throw err;
    throw undecodable();
  }
  const { info } = pixels;
  if (info.width !== spec.width || info.height !== spec.height) {
    throw new EdgeError(ErrorCodes.INTERNAL, 'resize produced an unexpected size', { info, spec });
  }
  const data = tensorize(pixels.data, info.channels, src.order, spec);
  return { data, geometry, preprocessMs: performance.now() - started };
}

function prepareInMemory(src: Source, g: Placement, spec: InputSpec): InputTensorData | undefined {
  const pixels = src.pixels ?? (src.png ? decodeSmallPng(src.png) : undefined);
  if (!pixels) return undefined;
  return smallFrameTensor(pixels, g, src.order, spec);
}
