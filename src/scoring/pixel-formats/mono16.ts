import type { PixelFormat } from './types.js';

/**
 * Mono16 (and Mono10/Mono12 unpacked): two bytes per pixel, little-endian, the value in the low
 * `bits` bits. Scoring keeps the 8 most significant of them (v >> (bits − 8)), as a camera's own
 * 8-bit output would; values above the declared range saturate at 255.
 */
export const mono16: PixelFormat = {
  name: 'mono16',
  bits: [16, 12, 10],
  byteLength: (w, h) => w * h * 2,
  decode(body, width, height, bits) {
    const n = width * height;
    const out = Buffer.allocUnsafe(n);
    const shift = bits - 8;
    for (let i = 0, p = 0; i < n; i++, p += 2) {
      const v = (body[p]! | (body[p + 1]! << 8)) >> shift;
      out[i] = v > 255 ? 255 : v;
    }
    return { data: out, channels: 1, order: 'rgb' };
  },
};
