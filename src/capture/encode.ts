import sharp, { type Matrix3x3 } from 'sharp';
import { decodeRaw } from '../scoring/pixel-formats/index.js';

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
 * The bytes a capture keeps: an encoded frame exactly as posted; a raw camera buffer as a lossless
 * PNG of its 8-bit pixels (bgr8 turned into RGB order, which every training tool reads). Runs on
 * sharp's thread pool.
 */
export async function captureBytes(
  frame: PostedFrame,
): Promise<{ data: Buffer; ext: string; mediaType: string }> {
  if (!frame.raw) {
    return { data: frame.body, ext: EXTENSIONS[frame.mediaType] ?? 'bin', mediaType: frame.mediaType };
  }
  const { width, height } = frame.raw;
  // mono8, rgb8 and bgr8 are kept exactly; the other camera formats (mono16, packed, Bayer, YUV) as
  // the 8-bit pixels the model was given (docs/capture.md, "What is stored").
  const px = decodeRaw(frame.body, frame.raw);
  let img = sharp(px.data, { raw: { width, height, channels: px.channels } });
  if (px.channels === 3 && px.order === 'bgr') img = img.recomb(BGR_TO_RGB);
  const data = await img.png({ compressionLevel: 3 }).toBuffer();
  return { data, ext: 'png', mediaType: 'image/png' };
}
