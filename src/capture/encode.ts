import sharp, { type Matrix3x3 } from 'sharp';

/** The fields of a posted frame capture needs (the engine's FrameInput fits this shape). */
export interface PostedFrame {
  body: Buffer;
  mediaType: string;
  raw?: { format: 'mono8' | 'rgb8' | 'bgr8'; width: number; height: number };
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
 * PNG (bgr8 turned into RGB order, which every training tool reads). Runs on sharp's thread pool.
 */
export async function captureBytes(
  frame: PostedFrame,
): Promise<{ data: Buffer; ext: string; mediaType: string }> {
  if (!frame.raw) {
    return { data: frame.body, ext: EXTENSIONS[frame.mediaType] ?? 'bin', mediaType: frame.mediaType };
  }
  const { format, width, height } = frame.raw;
  const channels = format === 'mono8' ? 1 : 3;
  let img = sharp(frame.body, { raw: { width, height, channels } });
  if (format === 'bgr8') img = img.recomb(BGR_TO_RGB);
  const data = await img.png({ compressionLevel: 3 }).toBuffer();
  return { data, ext: 'png', mediaType: 'image/png' };
}
