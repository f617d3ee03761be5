import { crc32, inflateSync } from 'node:zlib';
import type { PixelSource } from './resample.js';

/**
 * A PNG decoder for the small, plain frames AOI lines send by the thousand (text and component
 * crops of a few thousand pixels): 8-bit grey, RGB or palette, not interlaced, no transparency,
 * no colour profile. For such a frame the decode itself costs tens of microseconds, while a libvips
 * pipeline costs about 2 ms of set-up (see bench/README.md). It runs on the calling thread,
 * so it only takes frames up to {@link SMALL_PNG_MAX_PIXELS}.
 *
 * It is strict and never the one that refuses a frame: whatever it does not recognise as a
 * complete, well-formed PNG of that kind (a bad CRC, a truncated stream, a chunk it does not know,
 * trailing bytes) returns `undefined`, and the caller hands the body to sharp, which decodes it or
 * refuses it with the same error as before.
 */

/** Decoded on the event loop only up to this many pixels (≈ 256×256); larger frames go to sharp. */
export const SMALL_PNG_MAX_PIXELS = 65_536;

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Chunks that do not change the pixels sharp outputs (text, timestamps, density, sRGB intent). */
const IGNORABLE = new Set(['tEXt', 'zTXt', 'iTXt', 'tIME', 'pHYs', 'sRGB']);

export function isPng(body: Uint8Array): boolean {
  return body.length >= 8 && Buffer.from(body.buffer, body.byteOffset, 8).equals(SIGNATURE);
}

/** Valid bit depths for each PNG colour type. */
const DEPTHS: Record<number, number[]> = {
  0: [1, 2, 4, 8, 16],
  2: [8, 16],
  3: [1, 2, 4, 8],
  4: [8, 16],
  6: [8, 16],
};

/**
 * Width and height from a well-formed IHDR chunk (CRC, sizes and fields that libpng would accept),
 * or undefined: the caller then asks libvips, which answers for anything unusual as before.
 */
export function pngSize(body: Buffer): { width: number; height: number } | undefined {
  if (body.length < 33 || !isPng(body) || body.readUInt32BE(8) !== 13) return undefined;
  if (body.toString('latin1', 12, 16) !== 'IHDR') return undefined;
  if (crc32(body.subarray(12, 29)) !== body.readUInt32BE(29)) return undefined;
  const width = body.readUInt32BE(16);
  const height = body.readUInt32BE(20);
  const [depth, colour, compression, filter, interlace] = body.subarray(24, 29);
  if (!width || !height || width > 0xffff || height > 0xffff) return undefined;
  if (!DEPTHS[colour!]?.includes(depth!) || compression !== 0 || filter !== 0 || interlace! > 1)
    return undefined;
  return { width, height };
}

/** The size, when the header names a PNG of the kind {@link decodeSmallPng} takes, at a size it takes. */
export function smallPngSize(body: Buffer): { width: number; height: number } | undefined {
  const size = pngSize(body);
  if (!size || size.width * size.height > SMALL_PNG_MAX_PIXELS) return undefined;
  const [depth, colour, , , interlace] = body.subarray(24, 29);
  const taken = depth === 8 && (colour === 0 || colour === 2 || colour === 3) && interlace === 0;
  return taken ? size : undefined;
}

export function decodeSmallPng(body: Buffer): PixelSource | undefined {
  if (body.length < 8 + 25 + 12 || !isPng(body)) return undefined;
  let at = 8;
  let width = 0;
  let height = 0;
  let channels: 1 | 3 = 3;
  let palette: Buffer | undefined;
  let colourType = -1;
  const idat: Buffer[] = [];
  let ended = false;
  while (at + 12 <= body.length) {
    const length = body.readUInt32BE(at);
    const type = body.toString('latin1', at + 4, at + 8);
    const end = at + 12 + length;
    if (length > 0x7fffffff || end > body.length) return undefined;
    if (crc32(body.subarray(at + 4, at + 8 + length)) !== body.readUInt32BE(at + 8 + length))
      return undefined;
    const data = body.subarray(at + 8, at + 8 + length);
    at = end;
    if (type === 'IHDR') {
      if (colourType !== -1 || length !== 13) return undefined;
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [depth, colour, compression, filter, interlace] = data.subarray(8);
      if (depth !== 8 || compression !== 0 || filter !== 0 || interlace !== 0) return undefined;
      if (colour !== 0 && colour !== 2 && colour !== 3) return undefined;
      colourType = colour;
      channels = colour === 0 ? 1 : 3;
      if (width === 0 || height === 0 || width * height > SMALL_PNG_MAX_PIXELS) return undefined;
    } else if (colourType === -1) {
      return undefined;
    } else if (type === 'PLTE') {
      if (length % 3 !== 0 || length === 0 || idat.length) return undefined;
      palette = data;
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      ended = true;
      break;
    } else if (!IGNORABLE.has(type)) {
      return undefined;
    }
  }
  if (!ended || at !== body.length || idat.length === 0) return undefined;
  if (colourType === 3 && !palette) return undefined;

  const bpp = colourType === 2 ? 3 : 1;
  const stride = width * bpp;
  let raw: Buffer;
  try {
    raw = inflateSync(idat.length === 1 ? idat[0]! : Buffer.concat(idat), {
      maxOutputLength: (stride + 1) * height + 1,
    });
  } catch {
    return undefined;
  }
  if (raw.length !== (stride + 1) * height) return undefined;
  const pixels = unfilter(raw, stride, height, bpp);
  if (!pixels) return undefined;
  if (colourType !== 3) return { data: pixels, width, height, channels };

  const entries = palette!.length / 3;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, o = 0; i < pixels.length; i++, o += 3) {
    const k = pixels[i]!;
    if (k >= entries) return undefined;
    rgb[o] = palette![k * 3]!;
    rgb[o + 1] = palette![k * 3 + 1]!;
    rgb[o + 2] = palette![k * 3 + 2]!;
  }
  return { data: rgb, width, height, channels: 3 };
}

/** Reverses PNG's per-row filters (None, Sub, Up, Average, Paeth) into packed rows. */
function unfilter(raw: Buffer, stride: number, height: number, bpp: number): Uint8Array | undefined {
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    switch (filter) {
      case 0:
        out.set(raw.subarray(src, src + stride), row);
        break;
      case 1:
        for (let x = 0; x < stride; x++)
          out[row + x] = (raw[src + x]! + (x >= bpp ? out[row + x - bpp]! : 0)) & 0xff;
        break;
      case 2:
        for (let x = 0; x < stride; x++) out[row + x] = (raw[src + x]! + (y ? out[prev + x]! : 0)) & 0xff;
        break;
      case 3:
        for (let x = 0; x < stride; x++) {
          const left = x >= bpp ? out[row + x - bpp]! : 0;
          const up = y ? out[prev + x]! : 0;
          out[row + x] = (raw[src + x]! + ((left + up) >> 1)) & 0xff;
        }
        break;
      case 4:
        for (let x = 0; x < stride; x++) {
          const a = x >= bpp ? out[row + x - bpp]! : 0;
          const b = y ? out[prev + x]! : 0;
          const c = x >= bpp && y ? out[prev + x - bpp]! : 0;
          const p = a + b - c;
          const pa = Math.abs(p - a);
          const pb = Math.abs(p - b);
          const pc = Math.abs(p - c);
          out[row + x] = (raw[src + x]! + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 0xff;
        }
        break;
      default:
        return undefined;
    }
  }
  return out;
}
