import { crc32, deflateRawSync, constants as zlibConstants } from 'node:zlib';
import * as bmp from 'bmp-ts';
import sharp from 'sharp';

/** Synthetic camera frames for tests: raw HWC uint8 buffers and their encoded forms. */

export type Channels = 1 | 3;
export type FrameFormat = 'jpeg' | 'png' | 'webp' | 'tiff' | 'bmp';

/** Raw HWC uint8 pixels; `fn(x, y)` returns one value per channel (clamped to 0..255). */
export function makeRaw(
  width: number,
  height: number,
  channels: Channels,
  fn: (x: number, y: number) => number[],
): Buffer {
  const out = Buffer.alloc(width * height * channels);
  for (let y = 0, o = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const px = fn(x, y);
      for (let c = 0; c < channels; c++, o++) out[o] = Math.max(0, Math.min(255, Math.round(px[c] ?? 0)));
    }
  }
  return out;
}

/** One colour everywhere. `value` is a grey level or an [r, g, b] triple. */
export function solidFrame(
  width: number,
  height: number,
  channels: Channels,
  value: number | number[],
): Buffer {
  const px = typeof value === 'number' ? [value, value, value] : value;
  return makeRaw(width, height, channels, () => px);
}

/**
 * A frame where every pixel tells where it is: R (or grey) rises left to right from 0 to 255,
 * G rises top to bottom, B is constant 128. Handy to check crops, flips and channel order.
 */
export function gradientFrame(width: number, height: number, channels: Channels = 3): Buffer {
  const gx = (x: number): number => (width > 1 ? (255 * x) / (width - 1) : 0);
  const gy = (y: number): number => (height > 1 ? (255 * y) / (height - 1) : 0);
  return makeRaw(width, height, channels, (x, y) => (channels === 1 ? [gx(x)] : [gx(x), gy(y), 128]));
}

/** Swaps R and B of an rgb8 HWC buffer (rgb8 ↔ bgr8). */
export function toBgr(raw: Buffer): Buffer {
  const out = Buffer.from(raw);
  for (let i = 0; i + 2 < out.length; i += 3) {
    out[i] = raw[i + 2]!;
    out[i + 2] = raw[i]!;
  }
  return out;
}

/**
 * Encodes raw HWC pixels. jpeg/png/webp/tiff go through sharp; bmp through bmp-ts as a 24-bit,
 * bottom-up, uncompressed BMP (grey frames are written as three equal channels). PNG, TIFF (LZW)
 * and BMP are lossless; `quality` (default 95) applies to jpeg and webp, `lossless` to webp.
 */
export async function encodeFrame(
  raw: Buffer,
  width: number,
  height: number,
  channels: Channels,
  format: FrameFormat,
  opts: { quality?: number; lossless?: boolean } = {},
): Promise<Buffer> {
  if (raw.length !== width * height * channels) {
    throw new Error(`raw frame has ${raw.length} bytes, expected ${width}×${height}×${channels}`);
  }
  if (format === 'bmp') return encodeBmp(raw, width, height, channels);
  const img = sharp(raw, { raw: { width, height, channels } });
  const quality = opts.quality ?? 95;
  switch (format) {
    case 'jpeg':
      return img.jpeg({ quality }).toBuffer();
    case 'png':
      return img.png().toBuffer();
    case 'webp':
      return img.webp(opts.lossless ? { lossless: true } : { quality }).toBuffer();
    case 'tiff':
      return img.tiff({ compression: 'lzw' }).toBuffer();
  }
}

function encodeBmp(raw: Buffer, width: number, height: number, channels: Channels): Buffer {
  // bmp-ts reads 4 bytes per pixel in A, B, G, R order for its 24-bit encoder.
  const abgr = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    const r = raw[i * channels]!;
    const g = channels === 3 ? raw[i * 3 + 1]! : r;
    const b = channels === 3 ? raw[i * 3 + 2]! : r;
    abgr[i * 4 + 1] = b;
    abgr[i * 4 + 2] = g;
    abgr[i * 4 + 3] = r;
  }
  return bmp.encode({ data: abgr, width, height, bitPP: 24 }).data;
}

/** A small SVG document: sharp could render it, but the daemon must refuse it (415). */
export function svgFrame(width = 64, height = 64): Buffer {
  return Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
      `<rect width="${width}" height="${height}" fill="#1a5c2e"/><circle cx="${width / 2}" cy="${height / 2}" r="${Math.min(width, height) / 4}" fill="#f0f0f0"/></svg>\n`,
  );
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A decompression bomb: a complete, valid greyscale PNG of `width`×`height` black pixels whose
 * file is tiny (20000×20000 at the default 1 bit per pixel: ~50 KB on disk, 400 M pixels once
 * decoded). Built in milliseconds without ever holding the inflated data: one deflate chunk of
 * zeros is compressed once and repeated (each chunk ends on a byte-aligned sync flush and only
 * refers back into itself), then closed with an empty final block and the Adler-32 of all zeros.
 */
export function pngBomb(width = 20000, height = 20000, opts: { bitDepth?: 1 | 8 } = {}): Buffer {
  const bitDepth = opts.bitDepth ?? 1;
  const rowBytes = 1 + Math.ceil((width * bitDepth) / 8); // filter byte (0 = None) + pixels
  const total = rowBytes * height;
  const chunkSize = 1 << 20;
  const compress = (n: number): Buffer =>
    deflateRawSync(Buffer.alloc(n), { level: 9, finishFlush: zlibConstants.Z_SYNC_FLUSH });
  const full = compress(chunkSize);
  const parts: Buffer[] = [Buffer.from([0x78, 0xda])];
  for (let i = 0; i < Math.floor(total / chunkSize); i++) parts.push(full);
  if (total % chunkSize > 0) parts.push(compress(total % chunkSize));
  // Final empty fixed-Huffman block, then Adler-32 of `total` zero bytes: a = 1, b = total mod 65521.
  const trailer = Buffer.alloc(6);
  trailer[0] = 0x03;
  trailer.writeUInt32BE((((total % 65521) << 16) | 1) >>> 0, 2);
  parts.push(trailer);

  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', Buffer.concat(parts)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A small seeded PRNG (mulberry32), so the frames are the same every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BOARD_W = 160;
const BOARD_H = 120;

/**
 * A 160×120 JPEG board as a line camera sees it (drift tests): solder-mask green with light pads at random places, lighting
 * that varies a little from frame to frame, sensor noise. `gain` darkens, `blur` defocuses.
 */
export async function boardFrame(
  r: () => number,
  opts: { gain?: number; blur?: number } = {},
): Promise<Buffer> {
  const light = (0.9 + 0.2 * r()) * (opts.gain ?? 1);
  const pads = Array.from({ length: 4 + Math.floor(r() * 6) }, () => ({
    x: Math.floor(r() * (BOARD_W - 24)),
    y: Math.floor(r() * (BOARD_H - 16)),
    w: 8 + Math.floor(r() * 16),
    h: 6 + Math.floor(r() * 10),
  }));
  const raw = makeRaw(BOARD_W, BOARD_H, 3, (x, y) => {
    const pad = pads.some((p) => x >= p.x && x < p.x + p.w && y >= p.y && y < p.y + p.h);
    const noise = (r() - 0.5) * 12;
    const base = pad ? [200, 200, 190] : [30, 110, 45];
    return base.map((v) => v * light + noise);
  });
  let img = sharp(raw, { raw: { width: BOARD_W, height: BOARD_H, channels: 3 } });
  if (opts.blur) img = img.blur(opts.blur);
  return img.jpeg({ quality: 90 }).toBuffer();
}
