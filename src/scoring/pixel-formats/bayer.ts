import type { PixelFormat } from './types.js';

/** Colour (0 = R, 1 = G, 2 = B) of each site of the 2 × 2 tile: [even row: x even, x odd, odd row: …]. */
type Tile = readonly [number, number, number, number];

/**
 * Bayer 8-bit formats, one byte per pixel, named by the colours of the top-left 2 × 2 tile read row
 * by row (bayer_rg8: R G / G B). Demosaiced to RGB by bilinear interpolation: each missing colour
 * is the mean of the pixels of that colour in the 3 × 3 neighbourhood (only those inside the frame
 * at its edges), rounded — the classic method, deterministic and cheap enough for the main thread
 * at line-camera sizes.
 */
function bayer(name: string, tile: Tile): PixelFormat {
  return {
    name,
    bits: [8],
    byteLength: (w, h) => w * h,
    decode(body, width, height) {
      const out = Buffer.allocUnsafe(width * height * 3);
      for (let y = 0; y < height; y++) {
        const edgeRow = y === 0 || y === height - 1;
        for (let x = 0; x < width; x++) {
          if (edgeRow || x === 0 || x === width - 1) edgePixel(body, out, width, height, x, y, tile);
          else innerPixel(body, out, width, x, y, tile);
        }
      }
      return { data: out, channels: 3, order: 'rgb' };
    },
  };
}

/**
 * Inside the frame the 3 × 3 mean reduces to the four neighbours of one colour (G at an R or B
 * site, or R/B at a G site from its own row and column) and the diagonals; integer rounding
 * (s + n/2) / n equals Math.round of the mean for these non-negative sums.
 */
function innerPixel(body: Uint8Array, out: Buffer, width: number, x: number, y: number, tile: Tile): void {
  const i = y * width + x;
  const o = i * 3;
  const ry = (y & 1) << 1;
  const ny = ry ^ 2;
  const px = x & 1;
  const own = tile[ry | px]!;
  const hc = tile[ry | (px ^ 1)]!;
  const vc = tile[ny | px]!;
  out[o + own] = body[i]!;
  const l = body[i - 1]!;
  const r = body[i + 1]!;
  const u = body[i - width]!;
  const d = body[i + width]!;
  if (hc === vc) {
    out[o + hc] = (l + r + u + d + 2) >> 2;
    const diag = body[i - width - 1]! + body[i - width + 1]! + body[i + width - 1]! + body[i + width + 1]!;
    out[o + tile[ny | (px ^ 1)]!] = (diag + 2) >> 2;
  } else {
    out[o + hc] = (l + r + 1) >> 1;
    out[o + vc] = (u + d + 1) >> 1;
  }
}

/** At the frame's edges: the mean over the part of the 3 × 3 neighbourhood inside the frame. */
function edgePixel(
  body: Uint8Array,
  out: Buffer,
  width: number,
  height: number,
  x: number,
  y: number,
  tile: Tile,
): void {
  const sum = [0, 0, 0];
  const cnt = [0, 0, 0];
  for (let yy = Math.max(0, y - 1); yy <= Math.min(height - 1, y + 1); yy++) {
    const t = (yy & 1) << 1;
    for (let xx = Math.max(0, x - 1); xx <= Math.min(width - 1, x + 1); xx++) {
      const c = tile[t | (xx & 1)]!;
      sum[c]! += body[yy * width + xx]!;
      cnt[c]!++;
    }
  }
  const own = tile[((y & 1) << 1) | (x & 1)]!;
  const o = (y * width + x) * 3;
  for (let c = 0; c < 3; c++) {
    // A 1-pixel-wide or -high frame may lack a colour entirely: it reads as 0.
    out[o + c] = c === own ? body[y * width + x]! : cnt[c] ? Math.round(sum[c]! / cnt[c]!) : 0;
  }
}

const R = 0;
const G = 1;
const B = 2;
export const bayerRg8 = bayer('bayer_rg8', [R, G, G, B]);
export const bayerGr8 = bayer('bayer_gr8', [G, R, B, G]);
export const bayerGb8 = bayer('bayer_gb8', [G, B, R, G]);
export const bayerBg8 = bayer('bayer_bg8', [B, G, G, R]);
