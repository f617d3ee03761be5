import sharp, { type Sharp } from 'sharp';
import type { FrameInput } from './preprocess.js';

/** Channels of the raw camera formats sharp reads directly; other raw formats are not read here. */
const RAW_CHANNELS: Record<string, 1 | 3> = { mono8: 1, rgb8: 3, bgr8: 3 };

/**
 * A posted frame as sharp reads it, for the work done after the answer (console thumbnails, drift
 * features): encoded images as they are, 8-bit raw camera buffers by their header. Throws for raw
 * formats it does not read (Bayer, 10/12/16-bit, YUV), which those consumers skip.
 */
export function sharpOf(frame: FrameInput): Sharp {
  const raw = frame.raw;
  if (!raw) return sharp(frame.body, { failOn: 'none' });
  const channels = RAW_CHANNELS[raw.format];
  if (!channels) throw new Error(`raw format ${raw.format} is not read here`);
  const img = sharp(frame.body, { raw: { width: raw.width, height: raw.height, channels } });
  // BGR to RGB: swap the first and third channel.
  return raw.format === 'bgr8'
    ? img.recomb([
        [0, 0, 1],
        [0, 1, 0],
        [1, 0, 0],
      ])
    : img;
}
