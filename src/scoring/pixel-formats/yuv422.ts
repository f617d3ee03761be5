import type { PixelFormat } from './types.js';

const clamp = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/** Chroma terms per byte value, computed once: the conversion is then additions and a clamp. */
const table = (k: number): Float64Array => Float64Array.from({ length: 256 }, (_, i) => k * (i - 128));
const RV = table(1.402);
const GU = table(-0.344136);
const GV = table(-0.714136);
const BU = table(1.772);

/**
 * YUV 4:2:2, 8 bits, two pixels in four bytes sharing one U and one V: yuv422_yuyv is
 * Y0 U Y1 V, yuv422_uyvy is U Y0 V Y1. Converted with ITU-R BT.601 full-range coefficients
 * (as JPEG does): R = Y + 1.402 (V−128), G = Y − 0.344136 (U−128) − 0.714136 (V−128),
 * B = Y + 1.772 (U−128), rounded and clamped. The width must be even.
 */
function yuv422(name: string, offsets: { y0: number; u: number; y1: number; v: number }): PixelFormat {
  return {
    name,
    bits: [8],
    evenWidth: true,
    byteLength: (w, h) => w * h * 2,
    decode(body, width, height) {
      const pairs = (width * height) / 2;
      const out = Buffer.allocUnsafe(width * height * 3);
      for (let i = 0, p = 0, o = 0; i < pairs; i++, p += 4, o += 6) {
        const u = body[p + offsets.u]!;
        const v = body[p + offsets.v]!;
        const dr = RV[v]!;
        const dg = GU[u]! + GV[v]!;
        const db = BU[u]!;
        const ya = body[p + offsets.y0]!;
        const yb = body[p + offsets.y1]!;
        out[o] = clamp(ya + dr);
        out[o + 1] = clamp(ya + dg);
        out[o + 2] = clamp(ya + db);
        out[o + 3] = clamp(yb + dr);
        out[o + 4] = clamp(yb + dg);
        out[o + 5] = clamp(yb + db);
      }
      return { data: out, channels: 3, order: 'rgb' };
    },
  };
}

export const yuv422Yuyv = yuv422('yuv422_yuyv', { y0: 0, u: 1, y1: 2, v: 3 });
export const yuv422Uyvy = yuv422('yuv422_uyvy', { u: 0, y0: 1, v: 2, y1: 3 });
