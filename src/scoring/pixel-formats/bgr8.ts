import type { PixelFormat } from './types.js';

/** BGR8: three bytes per pixel, B G R; the channels are reordered in the tensor pass, not here. */
export const bgr8: PixelFormat = {
  name: 'bgr8',
  bits: [8],
  byteLength: (w, h) => w * h * 3,
  decode: (body) => ({
    data: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    channels: 3,
    order: 'bgr',
  }),
};
