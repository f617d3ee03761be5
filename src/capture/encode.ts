import { endianness } from 'node:os';
import sharp, { type Matrix3x3, type Sharp } from 'sharp';
import { decodeRaw } from '../scoring/pixel-formats/index.js';
import { unpackMono12p } from '../scoring/pixel-formats/mono12p.js';

/** The fields of a posted frame capture needs (the engine's FrameInput fits this shape). */
export interface PostedFrame {
  body: Buffer;
  mediaType: string;
  raw?: { format: string; width: number; height: number; bits?: number };
}

const EXTENSIONS: Record<string, string> = {
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/tiff': 'tif',
  'image/bmp': 'bmp',
};

/** Swaps blue and red: a permutation, exact on 8-bit values. */
const BGR_TO_RGB: Matrix3x3 = [
  [0, 0, 1],
  [0, 1, 0],
  [1, 0, 0],
];

/**
 * The bytes a capture keeps (docs/capture.md, "What is stored"): an encoded frame exactly as
 * posted; a raw camera buffer as a PNG, with the format in the sidecar's `frame.raw`:
 * - `mono8` grey, `rgb8` as is, `bgr8` in RGB order (a permutation, exact on 8-bit values);
 * - `mono16` and `mono12p` as 16-bit grey of the sensor values (0..2^bits − 1, not rescaled);
 * - Bayer and YUV 4:2:2 as the 8-bit RGB the model was given: demosaicing and chroma upsampling
 *   cannot be undone, and a training pipeline needs a picture of the scene, which the mosaic or
 *   the interleaved bytes are not.
 * Runs on sharp's thread pool.
 */
export async function captureBytes(
  frame: PostedFrame,
): Promise<{ data: Buffer; ext: string; mediaType: string }> {
  if (!frame.raw) {
    return { data: frame.body, ext: EXTENSIONS[frame.mediaType] ?? 'bin', mediaType: frame.mediaType };
  }
  const { width, height, format } = frame.raw;
  const png = (img: Sharp): Promise<Buffer> => img.png({ compressionLevel: 3 }).toBuffer();
  // sharp writes one-channel input as RGB unless told the image is grey.
  const grey8 = (data: Uint8Array, w: number): Promise<Buffer> =>
    png(sharp(data, { raw: { width: w, height, channels: 1 } }).toColourspace('b-w'));
  let data: Buffer;
  if (format === 'mono16' || format === 'mono12p') {
    const count = width * height;
    const values = format === 'mono16' ? littleEndian16(frame.body, count) : unpackMono12p(frame.body, count);
    data = await png(
      // A Uint16Array input is read as 16-bit samples.
      sharp(values, { raw: { width, height, channels: 1 } }).toColourspace('grey16'),
    );
  } else {
    // mono8, rgb8, bgr8 exactly; Bayer and YUV as the RGB the model was given.
    const px = decodeRaw(frame.body, frame.raw);
    if (px.channels === 1) {
      data = await grey8(px.data, width);
    } else {
      let img = sharp(px.data, { raw: { width, height, channels: 3 } });
      if (px.order === 'bgr') img = img.recomb(BGR_TO_RGB);
      data = await png(img);
    }
  }
  return { data, ext: 'png', mediaType: 'image/png' };
}

/**
 * The little-endian 16-bit samples of a mono16 body: a view of the bytes where the host is
 * little-endian and the offset aligned (no per-pixel work on the main thread), else a copy.
 */
function littleEndian16(body: Buffer, count: number): Uint16Array {
  if (endianness() === 'LE' && body.byteOffset % 2 === 0)
    return new Uint16Array(body.buffer, body.byteOffset, count);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = body.readUInt16LE(2 * i);
  return out;
}
