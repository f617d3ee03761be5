import type { PixelFormat } from './types.js';

/**
 * Mono12p (PFNC packed): two pixels in three bytes, least significant bits first —
 * byte 0 = p0 bits 0–7, byte 1 = p0 bits 8–11 (low nibble) | p1 bits 0–3 (high nibble),
 * byte 2 = p1 bits 4–11. An odd pixel count ends with two bytes. Scoring keeps the 8 most
 * significant bits (v >> 4).
 */
/** The 12-bit values of a Mono12p body, unpacked (for keeping them losslessly). */
export function unpackMono12p(body: Uint8Array, count: number): Uint16Array {
  const out = new Uint16Array(count);
  let i = 0;
  let p = 0;
  for (; i + 1 < count; i += 2, p += 3) {
    const b1 = body[p + 1]!;
    out[i] = body[p]! | ((b1 & 0x0f) << 8);
    out[i + 1] = (b1 >> 4) | (body[p + 2]! << 4);
  }
  if (i < count) out[i] = body[p]! | ((body[p + 1]! & 0x0f) << 8);
  return out;
}

export const mono12p: PixelFormat = {
  name: 'mono12p',
  bits: [12],
  byteLength: (w, h) => Math.ceil((w * h * 3) / 2),
  decode(body, width, height) {
    const n = width * height;
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    let p = 0;
    for (; i + 1 < n; i += 2, p += 3) {
      const b1 = body[p + 1]!;
      out[i] = (body[p]! >> 4) | ((b1 & 0x0f) << 4);
      out[i + 1] = body[p + 2]!;
    }
    if (i < n) out[i] = (body[p]! >> 4) | ((body[p + 1]! & 0x0f) << 4);
    return { data: out, channels: 1, order: 'rgb' };
  },
};
