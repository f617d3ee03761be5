import type { PixelFormat } from './types.js';

/** RGB8: three bytes per pixel, R G B. */
export const rgb8: PixelFormat = {
  name: 'rgb8',
  bits: [8],
  byteLength: (w, h) => w * h * 3,
  decode: (body) => ({
    data: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    channels: 3,
    order: 'rgb',
  }),
};
