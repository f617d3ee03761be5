import type { PixelFormat } from './types.js';

/** Mono8: one byte per pixel, row by row. */
export const mono8: PixelFormat = {
  name: 'mono8',
  bits: [8],
  byteLength: (w, h) => w * h,
  decode: (body) => ({
    data: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    channels: 1,
    order: 'rgb',
  }),
};
