import { randomInt } from 'node:crypto';
import net from 'node:net';
import { crc32 } from 'node:zlib';
import { Readable } from 'node:stream';
import sharp, { type Sharp } from 'sharp';
import type { Dispatcher, Pool } from 'undici';
import { encodeFrame, gradientFrame, makeRaw, pngBomb, svgFrame } from '../helpers/frames.js';

/*
 * A seeded generator of hostile frame requests for POST /v1/score (and the AVA route /score):
 * mutated, truncated and header-patched JPEG/PNG/BMP/TIFF/WebP frames, raw buffers with broken
 * X-Frame-* headers, SVG/XML and other formats under every accepted type, decompression bombs,
 * bodies over the limit, wrong Content-Types, and socket-level abuse (lying Content-Length,
 * pipelined garbage, slow senders). Case i depends only on (seed, i), so a failing case can be
 * replayed alone (FUZZ_SEED + FUZZ_ONLY) or with the whole run (FUZZ_SEED + FUZZ_CASES).
 */

/** What the fuzzer needs to know about the daemon under test. */
export interface FuzzTarget {
  /** BODY_LIMIT_BYTES of the daemon. */
  bodyLimitBytes: number;
  /** MAX_FRAME_PIXELS of the daemon. */
  maxFramePixels: number;
  /** REQUEST_TIMEOUT_MS of the daemon: slow senders must be cut off within it (plus slack). */
  requestTimeoutMs: number;
}

/** The outcome a case may legitimately have; anything else is reported. */
export interface Expectation {
  /** Statuses allowed for every answer of the case. */
  statuses: readonly number[];
  /** When set, a non-200 answer must carry one of these codes. */
  codes?: readonly string[];
}

interface CaseBase {
  index: number;
  /** The generator family, for grouping failures. */
  kind: string;
  /** What was sent, short enough to print. */
  description: string;
  expect: Expectation;
}

export interface HttpCase extends CaseBase {
  transport: 'http';
  method: 'POST' | 'GET' | 'PUT' | 'DELETE' | 'PATCH' | 'OPTIONS' | 'HEAD';
  path: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** Sent with Transfer-Encoding: chunked (no Content-Length) in `chunks` pieces. */
  chunks: number;
}

export interface SocketCase extends CaseBase {
  transport: 'socket';
  /** Bytes written at once after connecting. */
  data: Buffer;
  /** Complete responses after which the exchange is over (the server may also close first). */
  responses: number;
  /**
   * `wait`: after writing, wait for the responses or the close; `hangup`: destroy the socket
   * right after writing; `idle`: the request is incomplete, the server must close it within
   * REQUEST_TIMEOUT_MS; `trickle`: write `data` a few bytes at a time and never finish; the
   * server must cut the sender off within REQUEST_TIMEOUT_MS.
   */
  mode: 'wait' | 'hangup' | 'idle' | 'trickle';
  /** For `trickle`: bytes per tick and tick interval, after the first `startAt` bytes went at once. */
  trickle?: { bytes: number; everyMs: number; startAt: number };
}

export type FuzzCase = HttpCase | SocketCase;

/** One HTTP response read off the wire or from undici. */
export interface WireResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface CaseOutcome {
  responses: WireResponse[];
  /** The server closed the connection (socket cases). */
  closed: boolean;
  /** How long the exchange took, ms. */
  elapsedMs: number;
  /** A client-side failure: the connection broke before an answer, a timeout... */
  error?: string;
  /** Bytes after the last complete response that do not form one. */
  trailing?: string;
}

// ------------------------------------------------------------------ seeds and the PRNG

/** FUZZ_SEED (decimal or 0x hex) or a fresh random 32-bit seed. */
export function fuzzSeed(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.FUZZ_SEED?.trim();
  if (raw) {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
      throw new Error(`FUZZ_SEED=${raw} is not a 32-bit integer`);
    return n;
  }
  return randomInt(0, 0xffffffff);
}

/** FUZZ_CASES, default 10 000. */
export function fuzzCases(env: NodeJS.ProcessEnv = process.env, fallback = 10_000): number {
  const raw = env.FUZZ_CASES?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`FUZZ_CASES=${raw} is not a positive integer`);
  return n;
}

/** FUZZ_ONLY=3,17,2040: replay just these case indices. */
export function fuzzOnly(env: NodeJS.ProcessEnv = process.env): number[] | undefined {
  const raw = env.FUZZ_ONLY?.trim();
  if (!raw) return undefined;
  return raw.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 0) throw new Error(`FUZZ_ONLY entry ${s} is not a case index`);
    return n;
  });
}

/** mulberry32, seeded per case from (seed, index) through a splitmix-style hash. */
export class FuzzRng {
  private state: number;

  constructor(seed: number, stream = 0) {
    let h = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    this.state = (h ^ (h >>> 16)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    const total = table.reduce((s, [w]) => s + w, 0);
    let r = this.next() * total;
    for (const [w, v] of table) {
      r -= w;
      if (r < 0) return v;
    }
    return table[table.length - 1]![1];
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
}

// ------------------------------------------------------------------ the corpus of valid frames

export type ImageKind = 'jpeg' | 'png' | 'bmp' | 'tiff' | 'webp';

export interface SeedFrame {
  name: string;
  kind: ImageKind;
  bytes: Buffer;
}

export interface RawSeed {
  name: string;
  format: 'mono8' | 'rgb8' | 'bgr8';
  width: number;
  height: number;
  bytes: Buffer;
}

export interface Corpus {
  images: SeedFrame[];
  raws: RawSeed[];
  /** Content refused under any accepted type (415): GIF, AVIF/HEIF. */
  foreign: { name: string; bytes: Buffer }[];
  /** PNG and RLE8 BMP bombs: over the pixel limit (413) and a few that fit it. */
  bombs: { name: string; kind: 'png' | 'bmp'; bytes: Buffer; pixels: number }[];
  /** A 32×32 PNG that must score 200 between batches. */
  probe: Buffer;
}

const MEDIA: Record<ImageKind, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  bmp: 'image/bmp',
  tiff: 'image/tiff',
  webp: 'image/webp',
};
export const ACCEPTED = [...Object.values(MEDIA), 'application/octet-stream'] as const;

/** A BMP with a BITMAPINFOHEADER (or `dib` bytes of header), any of 1/4/8/16/24/32 bpp, uncompressed. */
export function makeBmp(o: {
  width: number;
  height: number;
  bpp: 1 | 4 | 8 | 16 | 24 | 32;
  topDown?: boolean;
  grayPalette?: boolean;
  dib?: 40 | 108 | 124;
  /** 32 bpp with BI_BITFIELDS and the standard masks. */
  bitfields?: boolean;
  rle8?: boolean;
}): Buffer {
  const { width, height, bpp } = o;
  const dib = o.dib ?? 40;
  const colors = bpp <= 8 ? 1 << bpp : 0;
  const masks = o.bitfields && dib === 40 ? 12 : 0;
  const paletteBytes = colors * 4;
  const dataOffset = 14 + dib + masks + paletteBytes;
  const stride = Math.ceil((width * bpp) / 32) * 4;
  let pixels = Buffer.alloc(stride * height);
  const px = gradientFrame(width, height, 3);
  for (let y = 0; y < height; y++) {
    const row = o.topDown ? y : height - 1 - y;
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const r = px[i]!;
      const g = px[i + 1]!;
      const b = px[i + 2]!;
      const o2 = row * stride;
      if (bpp === 24 || bpp === 32) {
        const p = o2 + x * (bpp / 8);
        pixels[p] = b;
        pixels[p + 1] = g;
        pixels[p + 2] = r;
      } else if (bpp === 16) {
        pixels.writeUInt16LE(((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3), o2 + x * 2);
      } else {
        const level = Math.round(((r + g + b) / 3 / 255) * (colors - 1));
        const bitPos = x * bpp;
        const byte = o2 + (bitPos >> 3);
        const shift = 8 - bpp - (bitPos & 7);
        pixels[byte] = pixels[byte]! | (level << shift);
      }
    }
  }
  if (o.rle8 && bpp === 8) {
    // Each row as literal runs of 1 pixel (count, value), end of line, and end of bitmap at the end.
    const parts: number[] = [];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) parts.push(1, pixels[y * stride + x]!);
      parts.push(0, 0);
    }
    parts.push(0, 1);
    pixels = Buffer.from(parts);
  }
  const out = Buffer.alloc(dataOffset + pixels.length);
  out.write('BM', 0, 'latin1');
  out.writeUInt32LE(out.length, 2);
  out.writeUInt32LE(dataOffset, 10);
  out.writeUInt32LE(dib, 14);
  out.writeInt32LE(width, 18);
  out.writeInt32LE(o.topDown ? -height : height, 22);
  out.writeUInt16LE(1, 26);
  out.writeUInt16LE(bpp, 28);
  out.writeUInt32LE(o.rle8 ? 1 : o.bitfields ? 3 : 0, 30);
  out.writeUInt32LE(pixels.length, 34);
  out.writeUInt32LE(colors, 46);
  if (o.bitfields) {
    const at = dib === 40 ? 54 : 14 + 40;
    out.writeUInt32LE(0xff0000, at);
    out.writeUInt32LE(0xff00, at + 4);
    out.writeUInt32LE(0xff, at + 8);
  }
  for (let i = 0; i < colors; i++) {
    const p = 14 + dib + masks + i * 4;
    const v = Math.round((i / Math.max(1, colors - 1)) * 255);
    out[p] = v;
    out[p + 1] = o.grayPalette === false ? 255 - v : v;
    out[p + 2] = v;
  }
  pixels.copy(out, dataOffset);
  return out;
}

/** Builds the valid frames every mutation starts from (a few hundred KB in all, ~1 s). */
export async function buildCorpus(): Promise<Corpus> {
  const rgb = gradientFrame(32, 32, 3);
  const rgbOdd = gradientFrame(37, 21, 3);
  const gray = gradientFrame(32, 24, 1);
  const rgba = makeRaw(24, 24, 3, (x, y) => [x * 10, y * 10, 128]);
  const fromRaw = (raw: Buffer, width: number, height: number, channels: 1 | 3 | 4): Sharp =>
    sharp(raw, { raw: { width, height, channels } });
  const alpha = Buffer.alloc(24 * 24 * 4);
  for (let i = 0; i < 24 * 24; i++) {
    rgba.copy(alpha, i * 4, i * 3, i * 3 + 3);
    alpha[i * 4 + 3] = (i * 7) & 255;
  }
  const images: SeedFrame[] = [
    { name: 'jpeg-rgb-32', kind: 'jpeg', bytes: await encodeFrame(rgb, 32, 32, 3, 'jpeg') },
    { name: 'jpeg-gray', kind: 'jpeg', bytes: await encodeFrame(gray, 32, 24, 1, 'jpeg') },
    {
      name: 'jpeg-progressive',
      kind: 'jpeg',
      bytes: await fromRaw(rgbOdd, 37, 21, 3).jpeg({ progressive: true }).toBuffer(),
    },
    {
      name: 'jpeg-cmyk',
      kind: 'jpeg',
      bytes: await fromRaw(rgb, 32, 32, 3).toColourspace('cmyk').jpeg().toBuffer(),
    },
    {
      name: 'jpeg-exif-rot',
      kind: 'jpeg',
      bytes: await fromRaw(rgbOdd, 37, 21, 3).withMetadata({ orientation: 6 }).jpeg().toBuffer(),
    },
    { name: 'png-rgb-32', kind: 'png', bytes: await encodeFrame(rgb, 32, 32, 3, 'png') },
    { name: 'png-gray', kind: 'png', bytes: await encodeFrame(gray, 32, 24, 1, 'png') },
    { name: 'png-rgba', kind: 'png', bytes: await fromRaw(alpha, 24, 24, 4).png().toBuffer() },
    {
      name: 'png-palette',
      kind: 'png',
      bytes: await fromRaw(rgb, 32, 32, 3).png({ palette: true }).toBuffer(),
    },
    {
      name: 'png-16bit',
      kind: 'png',
      bytes: await fromRaw(rgbOdd, 37, 21, 3).toColourspace('rgb16').png().toBuffer(),
    },
    {
      name: 'png-interlaced',
      kind: 'png',
      bytes: await fromRaw(rgbOdd, 37, 21, 3).png({ progressive: true }).toBuffer(),
    },
    { name: 'bmp-24', kind: 'bmp', bytes: await encodeFrame(rgb, 32, 32, 3, 'bmp') },
    { name: 'bmp-24-odd', kind: 'bmp', bytes: makeBmp({ width: 37, height: 21, bpp: 24 }) },
    {
      name: 'bmp-32-topdown',
      kind: 'bmp',
      bytes: makeBmp({ width: 32, height: 32, bpp: 32, topDown: true }),
    },
    {
      name: 'bmp-32-bitfields',
      kind: 'bmp',
      bytes: makeBmp({ width: 16, height: 16, bpp: 32, bitfields: true }),
    },
    { name: 'bmp-8-gray', kind: 'bmp', bytes: makeBmp({ width: 33, height: 17, bpp: 8 }) },
    {
      name: 'bmp-8-color',
      kind: 'bmp',
      bytes: makeBmp({ width: 32, height: 16, bpp: 8, grayPalette: false }),
    },
    { name: 'bmp-8-rle', kind: 'bmp', bytes: makeBmp({ width: 16, height: 16, bpp: 8, rle8: true }) },
    { name: 'bmp-4', kind: 'bmp', bytes: makeBmp({ width: 21, height: 13, bpp: 4 }) },
    { name: 'bmp-1', kind: 'bmp', bytes: makeBmp({ width: 40, height: 9, bpp: 1 }) },
    { name: 'bmp-16', kind: 'bmp', bytes: makeBmp({ width: 19, height: 11, bpp: 16 }) },
    { name: 'bmp-v5-24', kind: 'bmp', bytes: makeBmp({ width: 16, height: 16, bpp: 24, dib: 124 }) },
    { name: 'tiff-lzw', kind: 'tiff', bytes: await encodeFrame(rgb, 32, 32, 3, 'tiff') },
    {
      name: 'tiff-none',
      kind: 'tiff',
      bytes: await fromRaw(gray, 32, 24, 1).tiff({ compression: 'none' }).toBuffer(),
    },
    {
      name: 'tiff-deflate-tiled',
      kind: 'tiff',
      bytes: await fromRaw(rgb, 32, 32, 3)
        .tiff({ compression: 'deflate', tile: true, tileWidth: 16, tileHeight: 16 })
        .toBuffer(),
    },
    {
      name: 'tiff-jpeg',
      kind: 'tiff',
      bytes: await fromRaw(rgbOdd, 37, 21, 3).tiff({ compression: 'jpeg' }).toBuffer(),
    },
    { name: 'webp-lossy', kind: 'webp', bytes: await encodeFrame(rgb, 32, 32, 3, 'webp') },
    {
      name: 'webp-lossless',
      kind: 'webp',
      bytes: await encodeFrame(rgb, 32, 32, 3, 'webp', { lossless: true }),
    },
    { name: 'webp-alpha', kind: 'webp', bytes: await fromRaw(alpha, 24, 24, 4).webp().toBuffer() },
  ];
  const raws: RawSeed[] = [
    { name: 'raw-rgb8', format: 'rgb8', width: 32, height: 32, bytes: rgb },
    { name: 'raw-bgr8', format: 'bgr8', width: 37, height: 21, bytes: rgbOdd },
    { name: 'raw-mono8', format: 'mono8', width: 32, height: 24, bytes: gray },
  ];
  const foreign = [
    { name: 'gif', bytes: await fromRaw(rgb, 32, 32, 3).gif().toBuffer() },
    { name: 'avif', bytes: await fromRaw(rgb, 32, 32, 3).avif({ effort: 0 }).toBuffer() },
  ];
  const rleBomb = (width: number, height: number): Buffer => {
    // A valid 16×16 RLE8 stream under a header that promises width × height: bmp-ts fills the rest.
    const b = makeBmp({ width: 16, height: 16, bpp: 8, rle8: true });
    b.writeInt32LE(width, 18);
    b.writeInt32LE(height, 22);
    return b;
  };
  const bombs: Corpus['bombs'] = [
    { name: 'png-bomb-20000x20000', kind: 'png', bytes: pngBomb(20000, 20000), pixels: 20000 * 20000 },
    // Only 2 rows of data under an IHDR (CRC fixed) that promises 65535×65535 8-bit pixels.
    {
      name: 'png-bomb-65535x65535-8bit',
      kind: 'png',
      bytes: patchPngIhdr(pngBomb(65535, 2, { bitDepth: 8 }), 65535, 65535, true),
      pixels: 65535 * 65535,
    },
    { name: 'png-bomb-12000x9000', kind: 'png', bytes: pngBomb(12000, 9000), pixels: 12000 * 9000 },
    { name: 'png-bomb-1000000x120', kind: 'png', bytes: pngBomb(1_000_000, 120), pixels: 1_000_000 * 120 },
    { name: 'png-bomb-2000x1500-fits', kind: 'png', bytes: pngBomb(2000, 1500), pixels: 2000 * 1500 },
    { name: 'bmp-rle8-bomb-20000x20000', kind: 'bmp', bytes: rleBomb(20000, 20000), pixels: 20000 * 20000 },
    { name: 'bmp-rle8-bomb-65535x65535', kind: 'bmp', bytes: rleBomb(65535, -65535), pixels: 65535 * 65535 },
    { name: 'bmp-rle8-bomb-1500x1000-fits', kind: 'bmp', bytes: rleBomb(1500, 1000), pixels: 1500 * 1000 },
  ];
  return { images, raws, foreign, bombs, probe: await encodeFrame(rgb, 32, 32, 3, 'png') };
}

// ------------------------------------------------------------------ format-aware patches

/** PNG IHDR width/height (big-endian u32 at 16 and 20); `fixCrc` recomputes the chunk CRC. */
export function patchPngIhdr(png: Buffer, width: number, height: number, fixCrc: boolean): Buffer {
  const out = Buffer.from(png);
  if (out.length < 33 || out.toString('latin1', 12, 16) !== 'IHDR') return out;
  out.writeUInt32BE(width >>> 0, 16);
  out.writeUInt32BE(height >>> 0, 20);
  if (fixCrc) out.writeUInt32BE(crc32(out.subarray(12, 29)) >>> 0, 29);
  return out;
}

/** JPEG SOFn height/width (big-endian u16 at +5 and +7 from the marker). */
export function patchJpegSof(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  let p = 2;
  while (p + 9 < out.length) {
    if (out[p] !== 0xff) break;
    const marker = out[p + 1]!;
    const len = out.readUInt16BE(p + 2);
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (sof) {
      out.writeUInt16BE(height & 0xffff, p + 5);
      out.writeUInt16BE(width & 0xffff, p + 7);
      return out;
    }
    if (marker === 0xda) break;
    p += 2 + len;
  }
  return out;
}

/** Rewrites TIFF IFD0 entries (little-endian files, as sharp writes them) with a LONG value. */
export function patchTiffTag(tiff: Buffer, tag: number, value: number): Buffer {
  const out = Buffer.from(tiff);
  if (out.length < 8 || out.toString('latin1', 0, 2) !== 'II') return out;
  const ifd = out.readUInt32LE(4);
  if (ifd + 2 > out.length) return out;
  const count = out.readUInt16LE(ifd);
  for (let i = 0; i < count; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > out.length) break;
    if (out.readUInt16LE(e) === tag) {
      out.writeUInt16LE(4, e + 2);
      out.writeUInt32LE(1, e + 4);
      out.writeUInt32LE(value >>> 0, e + 8);
    }
  }
  return out;
}

/** WebP canvas size: VP8 (14-bit), VP8L (14-bit, minus one) or VP8X (24-bit, minus one). */
export function patchWebpSize(webp: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(webp);
  if (out.length < 30 || out.toString('latin1', 8, 12) !== 'WEBP') return out;
  const chunk = out.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') {
    out.writeUInt16LE(width & 0x3fff, 26);
    out.writeUInt16LE(height & 0x3fff, 28);
  } else if (chunk === 'VP8L') {
    const w = (width - 1) & 0x3fff;
    const h = (height - 1) & 0x3fff;
    const bits = (out.readUInt32LE(21) & 0xf0000000) | w | (h << 14);
    out.writeUInt32LE(bits >>> 0, 21);
  } else if (chunk === 'VP8X') {
    out.writeUIntLE((width - 1) & 0xffffff, 24, 3);
    out.writeUIntLE((height - 1) & 0xffffff, 27, 3);
  }
  return out;
}

// ------------------------------------------------------------------ mutations

const INTERESTING_8 = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_32 = [
  0, 1, 0x7f, 0xff, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff,
];
const DIMENSIONS = [
  0, 1, 2, 31, 32, 33, 255, 256, 4096, 10000, 16383, 32767, 32768, 65535, 65536, 0x7fffffff,
];

/** Where mutations land: the header region half of the time, since that is where parsers branch. */
function offset(rng: FuzzRng, len: number): number {
  if (len <= 1) return 0;
  return rng.chance(0.5) ? rng.int(0, Math.min(len - 1, 127)) : rng.int(0, len - 1);
}

type Mutation = (rng: FuzzRng, b: Buffer, other: Buffer) => [Buffer, string];

const MUTATIONS: readonly (readonly [number, Mutation])[] = [
  [
    4,
    (rng, b) => {
      const out = Buffer.from(b);
      const n = rng.int(1, 8);
      for (let i = 0; i < n && out.length > 0; i++) {
        const p = offset(rng, out.length);
        out[p] = out[p]! ^ (1 << rng.int(0, 7));
      }
      return [out, `flip ${n} bit(s)`];
    },
  ],
  [
    3,
    (rng, b) => {
      const out = Buffer.from(b);
      if (out.length === 0) return [out, 'set byte (empty)'];
      const p = offset(rng, out.length);
      const v = rng.chance(0.7) ? rng.pick(INTERESTING_8) : rng.int(0, 255);
      out[p] = v;
      return [out, `byte[${p}]=0x${v.toString(16)}`];
    },
  ],
  [
    2,
    (rng, b) => {
      const out = Buffer.from(b);
      if (out.length < 4) return [out, 'set u32 (too short)'];
      const p = Math.min(offset(rng, out.length), out.length - 4);
      const v = rng.pick(INTERESTING_32);
      if (rng.chance(0.5)) out.writeUInt32LE(v >>> 0, p);
      else out.writeUInt32BE(v >>> 0, p);
      return [out, `u32[${p}]=0x${v.toString(16)}`];
    },
  ],
  [
    2,
    (rng, b) => {
      const out = Buffer.from(b);
      if (out.length === 0) return [out, 'byte run (empty)'];
      const p = offset(rng, out.length);
      const n = Math.min(rng.int(1, 256), out.length - p);
      const v = rng.pick([...INTERESTING_8, rng.int(0, 255)]);
      out.fill(v, p, p + n);
      return [out, `run of ${n}×0x${v.toString(16)} at ${p}`];
    },
  ],
  [
    2,
    (rng, b) => {
      if (b.length < 2) return [Buffer.from(b), 'delete (too short)'];
      const p = offset(rng, b.length);
      const n = Math.min(rng.int(1, Math.max(1, Math.floor(b.length / 4))), b.length - p);
      return [Buffer.concat([b.subarray(0, p), b.subarray(p + n)]), `delete ${n} at ${p}`];
    },
  ],
  [
    2,
    (rng, b) => {
      if (b.length < 2) return [Buffer.from(b), 'duplicate (too short)'];
      const p = offset(rng, b.length);
      const n = Math.min(rng.int(1, 512), b.length - p);
      const times = rng.int(1, 4);
      const dup = Buffer.concat(Array.from({ length: times }, () => b.subarray(p, p + n)));
      return [
        Buffer.concat([b.subarray(0, p + n), dup, b.subarray(p + n)]),
        `duplicate ${n}×${times} at ${p}`,
      ];
    },
  ],
  [
    1,
    (rng, b) => {
      const p = offset(rng, b.length + 1);
      const n = rng.int(1, 256);
      return [Buffer.concat([b.subarray(0, p), rng.bytes(n), b.subarray(p)]), `insert ${n} random at ${p}`];
    },
  ],
  [
    1,
    (rng, b, other) => {
      const p = rng.int(0, b.length);
      const q = rng.int(0, other.length);
      return [
        Buffer.concat([b.subarray(0, p), other.subarray(q)]),
        `splice at ${p} with another frame from ${q}`,
      ];
    },
  ],
  [
    1,
    (rng, b) => {
      const out = Buffer.from(b);
      const end = Math.min(out.length, 64);
      for (let i = 0; i < end; i++) if (rng.chance(0.2)) out[i] = rng.int(0, 255);
      return [out, 'scramble header bytes'];
    },
  ],
];

function mutate(rng: FuzzRng, bytes: Buffer, other: Buffer, count: number): [Buffer, string[]] {
  let out = bytes;
  const what: string[] = [];
  for (let i = 0; i < count; i++) {
    const [next, d] = rng.weighted(MUTATIONS)(rng, out, other);
    out = next;
    what.push(d);
  }
  return [out, what];
}

// ------------------------------------------------------------------ case families

const ANY_4XX = [400, 401, 404, 405, 408, 411, 413, 414, 415, 422, 429, 431];
const IMAGE_OUTCOMES = [200, 400, 413, 415, 429];
const WRONG_TYPES = [
  'image/gif',
  'image/svg+xml',
  'text/plain',
  'application/json',
  'application/xml',
  'text/html',
  'application/x-www-form-urlencoded',
  'image/*',
  '*/*',
  'image/heic',
  'image/avif',
  'image/x-ms-bmp',
  'image/jpg',
  'image/pjpeg',
  'video/mp4',
  'application/pdf',
  'jpeg',
  '/',
  ';',
  'image/',
  'x'.repeat(4000),
];
/** Variants of an accepted type a client might send; the daemon may accept or refuse them (415). */
const TYPE_VARIANTS = (t: string): string[] => [
  t.toUpperCase(),
  `${t}; charset=utf-8`,
  `${t};q=0.9;x="y"`,
  ` ${t} `,
  `${t}, image/png`,
  `${t}\t`,
  `${t};`,
  `${t}+xml`,
  `x-${t}`,
];

const seedOf = (rng: FuzzRng, c: Corpus, kind?: ImageKind): SeedFrame =>
  rng.pick(kind ? c.images.filter((s) => s.kind === kind) : c.images);

function scorePath(rng: FuzzRng): string {
  return rng.chance(0.85) ? '/v1/score' : '/score';
}

function idHeaders(rng: FuzzRng): Record<string, string> {
  if (!rng.chance(0.3)) return {};
  const h: Record<string, string> = {};
  if (rng.chance(0.7)) h['x-frame-id'] = `fz-${rng.int(0, 1e9)}`;
  if (rng.chance(0.5)) h['x-camera-id'] = rng.pick(['line1-top', 'cam-2', 'A']);
  return h;
}

type Family = (rng: FuzzRng, c: Corpus, t: FuzzTarget) => Omit<FuzzCase, 'index'>;

const http = (
  kind: string,
  description: string,
  expect: Expectation,
  o: Partial<Pick<HttpCase, 'method' | 'path' | 'headers' | 'chunks'>> & { body: Buffer },
  rng: FuzzRng,
): Omit<HttpCase, 'index'> => ({
  transport: 'http',
  kind,
  description,
  expect,
  method: o.method ?? 'POST',
  path: o.path ?? scorePath(rng),
  headers: o.headers ?? {},
  body: o.body,
  chunks: o.chunks ?? (rng.chance(0.03) ? rng.int(2, 5) : 0),
});

const frameHeaders = (rng: FuzzRng, type: string | null): Record<string, string> => ({
  ...(type === null ? {} : { 'content-type': type }),
  ...idHeaders(rng),
});

/** Mutations of valid frames, sent mostly under their own type. */
const mutated: Family = (rng, c) => {
  const s = seedOf(rng, c);
  const other = rng.chance(0.5) ? seedOf(rng, c).bytes : rng.bytes(rng.int(1, 512));
  const [body, what] = mutate(
    rng,
    s.bytes,
    other,
    rng.weighted([
      [5, 1],
      [3, 2],
      [2, 3],
      [1, 6],
    ]),
  );
  const type = rng.chance(0.85) ? MEDIA[s.kind] : rng.pick(Object.values(MEDIA));
  return http(
    'mutation',
    `${s.name} as ${type}: ${what.join(', ')}`,
    { statuses: IMAGE_OUTCOMES },
    { body, headers: frameHeaders(rng, type) },
    rng,
  );
};

/** Prefixes of valid frames: empty, inside the signature, inside the header, mid-pixels. */
const truncated: Family = (rng, c) => {
  const s = seedOf(rng, c);
  const len = rng.weighted([
    [1, 0],
    [2, rng.int(1, 8)],
    [3, rng.int(9, Math.min(200, s.bytes.length - 1))],
    [4, rng.int(0, s.bytes.length - 1)],
  ]);
  const body = s.bytes.subarray(0, len);
  return http(
    'truncation',
    `${s.name} cut to ${len}/${s.bytes.length} bytes`,
    { statuses: IMAGE_OUTCOMES },
    { body, headers: frameHeaders(rng, MEDIA[s.kind]) },
    rng,
  );
};

/** Absurd (and merely large) dimensions in PNG IHDR, BMP, JPEG SOF, TIFF and WebP headers. */
const dimensions: Family = (rng, c, t) => {
  const kind = rng.pick<ImageKind>(['png', 'bmp', 'jpeg', 'tiff', 'webp']);
  const s = seedOf(rng, c, kind);
  const absurd = rng.chance(0.5);
  const w = absurd ? 65535 : rng.pick(DIMENSIONS);
  const h = absurd ? 65535 : rng.pick(DIMENSIONS);
  let body: Buffer;
  let what: string;
  switch (kind) {
    case 'png': {
      const fix = rng.chance(0.8);
      body = patchPngIhdr(s.bytes, w, h, fix);
      what = `IHDR ${w}×${h}${fix ? '' : ' (stale CRC)'}`;
      break;
    }
    case 'bmp': {
      body = Buffer.from(s.bytes);
      const hh = rng.chance(0.3) ? -h : h;
      body.writeInt32LE(w | 0, 18);
      body.writeInt32LE(hh | 0, 22);
      what = `BMP header ${w}×${hh}`;
      break;
    }
    case 'jpeg':
      body = patchJpegSof(s.bytes, w, h);
      what = `SOF ${w & 0xffff}×${h & 0xffff}`;
      break;
    case 'tiff': {
      body = patchTiffTag(patchTiffTag(s.bytes, 256, w), 257, h);
      if (rng.chance(0.3))
        body = patchTiffTag(body, rng.pick([273, 279, 278, 322, 323]), rng.pick(INTERESTING_32));
      what = `TIFF tags ${w}×${h}`;
      break;
    }
    case 'webp':
      body = patchWebpSize(s.bytes, w, h);
      what = `WebP canvas ${w}×${h}`;
      break;
  }
  // A header that promises more than MAX_FRAME_PIXELS must be 413 (or 400 when the header itself
  // no longer parses); anything smaller may still fail to decode.
  const huge = kind !== 'webp' && kind !== 'tiff' && w * h > t.maxFramePixels && w > 0 && h > 0;
  const expect: Expectation =
    huge && kind === 'jpeg' ? { statuses: [413, 400] } : { statuses: IMAGE_OUTCOMES };
  return http(
    'dimensions',
    `${s.name}: ${what}`,
    expect,
    { body, headers: frameHeaders(rng, MEDIA[kind]) },
    rng,
  );
};

/** BMP header fields that route a frame to the bmp-ts fallback or to the fast paths with bad data. */
const bmpHeader: Family = (rng, c) => {
  const s = seedOf(rng, c, 'bmp');
  const body = Buffer.from(s.bytes);
  const what: string[] = [];
  const edits = rng.int(1, 3);
  for (let i = 0; i < edits; i++) {
    const field = rng.pick([
      'bpp',
      'compression',
      'dataOffset',
      'dibSize',
      'colors',
      'planes',
      'size',
      'dims',
    ] as const);
    switch (field) {
      case 'bpp': {
        const v = rng.pick([0, 1, 2, 4, 8, 15, 16, 24, 32, 48, 64, 0xffff]);
        body.writeUInt16LE(v, 28);
        what.push(`bpp=${v}`);
        break;
      }
      case 'compression': {
        const v = rng.pick([0, 1, 2, 3, 4, 5, 6, 11, 0xffffffff]);
        body.writeUInt32LE(v >>> 0, 30);
        what.push(`compression=${v}`);
        break;
      }
      case 'dataOffset': {
        const v = rng.pick([
          0,
          1,
          14,
          53,
          54,
          body.length - 1,
          body.length,
          body.length + 1,
          0x7fffffff,
          0xffffffff,
        ]);
        body.writeUInt32LE(Math.max(0, v) >>> 0, 10);
        what.push(`dataOffset=${v}`);
        break;
      }
      case 'dibSize': {
        const v = rng.pick([0, 12, 16, 39, 40, 52, 56, 64, 108, 124, 125, 0xffff, 0xffffffff]);
        body.writeUInt32LE(v >>> 0, 14);
        what.push(`dibSize=${v}`);
        break;
      }
      case 'colors': {
        if (body.length >= 50) {
          const v = rng.pick([0, 1, 255, 256, 257, 65536, 0x7fffffff, 0xffffffff]);
          body.writeUInt32LE(v >>> 0, 46);
          what.push(`colorsUsed=${v}`);
        }
        break;
      }
      case 'planes': {
        const v = rng.pick([0, 2, 0xffff]);
        body.writeUInt16LE(v, 26);
        what.push(`planes=${v}`);
        break;
      }
      case 'dims': {
        const w = rng.pick(DIMENSIONS);
        const h = rng.pick(DIMENSIONS) * (rng.chance(0.3) ? -1 : 1);
        body.writeInt32LE(w | 0, 18);
        body.writeInt32LE(h | 0, 22);
        what.push(`dims=${w}×${h}`);
        break;
      }
      case 'size': {
        const v = rng.pick([0, 1, 0xffffffff]);
        body.writeUInt32LE(v >>> 0, 2);
        what.push(`fileSize=${v}`);
        break;
      }
    }
  }
  return http(
    'bmp-header',
    `${s.name}: ${what.join(', ')}`,
    { statuses: IMAGE_OUTCOMES },
    { body, headers: frameHeaders(rng, 'image/bmp') },
    rng,
  );
};

const RAW_FORMATS = ['mono8', 'rgb8', 'bgr8'];
const BAD_FORMATS = [
  'MONO8',
  'Rgb8',
  'rgba8',
  'yuv422',
  'bayer_rg8',
  'rgb16',
  '',
  ' ',
  'rgb8 rgb8',
  'rgb8,mono8',
  'constructor',
  '__proto__',
  'toString',
];
const DIM_TEXT = [
  '0',
  '-1',
  '-0',
  '+32',
  '1e3',
  '0x20',
  '32.0',
  '3.2e1',
  'NaN',
  'Infinity',
  '',
  ' ',
  '99999999999999999999',
  '65536',
  '100000',
  '4294967296',
  'abc',
  '32,32',
  '32 32',
  '0032',
  '00000032',
  '٣٢',
];

/** Raw frames with wrong, missing or absurd X-Frame-* headers and bodies that do or do not fit. */
const raw: Family = (rng, c, t) => {
  const s = rng.pick(c.raws);
  const headers: Record<string, string | string[]> = {
    'content-type': 'application/octet-stream',
    ...idHeaders(rng),
  };
  const what: string[] = [];
  const fmt = rng.weighted([
    [6, s.format],
    [2, rng.pick(RAW_FORMATS)],
    [2, rng.pick(BAD_FORMATS)],
    [1, undefined],
  ]);
  const dim = (real: number): string | undefined =>
    rng.weighted([
      [6, String(real)],
      [2, String(rng.pick(DIMENSIONS))],
      [2, rng.pick(DIM_TEXT)],
      [1, undefined],
    ]);
  const w = dim(s.width);
  const h = dim(s.height);
  for (const [name, v] of [
    ['x-frame-format', fmt],
    ['x-frame-width', w],
    ['x-frame-height', h],
  ] as const) {
    if (v === undefined) {
      what.push(`no ${name}`);
      continue;
    }
    // Two header lines for one name: Node joins them with ", ".
    headers[name] = rng.chance(0.05) ? [v, v] : v;
    what.push(`${name}=${JSON.stringify(v).slice(0, 40)}`);
  }
  const body = rng.weighted([
    [5, () => s.bytes],
    [1, () => s.bytes.subarray(0, s.bytes.length - 1)],
    [1, () => Buffer.concat([s.bytes, Buffer.from([0])])],
    [1, () => Buffer.alloc(0)],
    [1, () => rng.bytes(rng.int(1, 4096))],
    [1, () => mutate(rng, s.bytes, s.bytes, 1)[0]],
  ])();
  what.push(`${body.length} bytes`);
  const big = Number(w) * Number(h) > t.maxFramePixels;
  return http(
    'raw',
    `${s.name}: ${what.join(', ')}`,
    { statuses: big ? [400, 413] : [200, 400, 413, 422, 429] },
    { body, headers },
    rng,
  );
};

/** Valid frames under wrong, missing, or odd spellings of the Content-Type. */
const contentType: Family = (rng, c) => {
  const s = seedOf(rng, c);
  const choice = rng.weighted<() => { type: string | null; outcome: number[] }>([
    [3, () => ({ type: rng.pick(WRONG_TYPES), outcome: [415] })],
    [2, () => ({ type: null, outcome: [415] })],
    [2, () => ({ type: rng.pick(TYPE_VARIANTS(MEDIA[s.kind])), outcome: [200, 400, 415] })],
    [2, () => ({ type: rng.pick(Object.values(MEDIA)), outcome: [200, 400, 415] })],
    [1, () => ({ type: 'application/octet-stream', outcome: [400] })],
    // multipart/form-data carries a board with ad-hoc regions; an image body is not one.
    [1, () => ({ type: 'multipart/form-data; boundary=x', outcome: [400] })],
  ])();
  return http(
    'content-type',
    `${s.name} as ${choice.type === null ? '(no Content-Type)' : JSON.stringify(choice.type.slice(0, 60))}`,
    { statuses: choice.outcome },
    { body: s.bytes, headers: frameHeaders(rng, choice.type) },
    rng,
  );
};

const SVGS: readonly (readonly [string, () => Buffer])[] = [
  ['plain svg', () => svgFrame()],
  ['huge svg', () => svgFrame(100_000_000, 100_000_000)],
  [
    'svg without xml decl',
    () => Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"/>'),
  ],
  [
    'svg with external image',
    () =>
      Buffer.from(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="32" height="32">' +
          '<image xlink:href="file:///etc/passwd" width="32" height="32"/><image href="http://127.0.0.1:1/x.png"/></svg>',
      ),
  ],
  [
    'billion laughs',
    () => {
      let dtd = '<!ENTITY a0 "lol">';
      for (let i = 1; i < 10; i++) dtd += `<!ENTITY a${i} "${`&a${i - 1};`.repeat(10)}">`;
      return Buffer.from(
        `<?xml version="1.0"?><!DOCTYPE svg [${dtd}]><svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><text>&a9;</text></svg>`,
      );
    },
  ],
  [
    'xxe',
    () =>
      Buffer.from(
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' +
          '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><text>&xxe;</text></svg>',
      ),
  ],
  ['bom + svg', () => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), svgFrame()])],
  ['utf-16 svg', () => Buffer.from(`\ufeff${svgFrame().toString()}`, 'utf16le')],
  ['plain xml', () => Buffer.from('<?xml version="1.0"?><root><a>1</a></root>')],
  ['svgz-like', () => Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0]), svgFrame()])],
  ['html', () => Buffer.from('<!doctype html><html><body><img src=x onerror=alert(1)></body></html>')],
];

/** SVG/XML payloads under every accepted type: refused (415) or undecodable (400), never scored. */
const svg: Family = (rng) => {
  const [name, make] = rng.pick(SVGS);
  const type = rng.pick(ACCEPTED);
  const headers: Record<string, string> = frameHeaders(rng, type);
  let statuses = [400, 415];
  const body = make();
  if (type === 'application/octet-stream') {
    // Raw bytes are pixels: with headers that fit, even SVG text is a valid mono8 frame.
    headers['x-frame-format'] = 'mono8';
    headers['x-frame-width'] = String(body.length);
    headers['x-frame-height'] = rng.pick(['1', '2']);
    statuses = [200, 400, 413, 422];
  }
  return http('svg', `${name} as ${type}`, { statuses }, { body, headers }, rng);
};

const MAGIC: readonly (readonly [string, Buffer])[] = [
  ['pdf', Buffer.from('%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF')],
  ['psd', Buffer.concat([Buffer.from('8BPS'), Buffer.alloc(60)])],
  ['ico', Buffer.from([0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 22, 0, 0, 0])],
  ['jp2', Buffer.from([0, 0, 0, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a, 0, 0, 0, 0])],
  ['jxl', Buffer.from([0xff, 0x0a, 0xfa, 0x7f, 0, 0, 0, 0])],
  ['heic-ftyp', Buffer.concat([Buffer.from([0, 0, 0, 0x18]), Buffer.from('ftypheic\0\0\0\0mif1heic')])],
  ['zip', Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0])],
  ['elf', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0])],
  ['gif-header-only', Buffer.from('GIF89a\x20\x00\x20\x00\x00\x00\x00', 'latin1')],
  ['fits', Buffer.from(`SIMPLE  =                    T${' '.repeat(50)}`)],
  ['vips', Buffer.from([0x08, 0xf2, 0xa6, 0xb6, 0, 0, 0, 0])],
  ['ppm', Buffer.from('P6\n32 32\n255\n')],
  ['exr', Buffer.from([0x76, 0x2f, 0x31, 0x01, 2, 0, 0, 0])],
  ['nul', Buffer.alloc(1024)],
];

/** GIF/AVIF content and other formats' magic numbers under accepted types. */
const foreignFormat: Family = (rng, c) => {
  const useReal = rng.chance(0.5);
  const [name, bytes] = useReal
    ? (() => {
        const f = rng.pick(c.foreign);
        return [f.name, f.bytes] as const;
      })()
    : rng.pick(MAGIC);
  const type = rng.pick(Object.values(MEDIA));
  const body = rng.chance(0.3) ? mutate(rng, bytes, bytes, 1)[0] : bytes;
  return http(
    'foreign-format',
    `${name} as ${type}`,
    { statuses: [400, 415] },
    { body, headers: frameHeaders(rng, type) },
    rng,
  );
};

/** Decompression bombs: over the pixel limit 413; within it PNGs decode or fail cleanly, RLE BMPs get 415. */
const bomb: Family = (rng, c, t) => {
  const b = rng.pick(c.bombs);
  const own = MEDIA[b.kind];
  const type = rng.chance(0.8) ? own : rng.pick(Object.values(MEDIA));
  const over = b.pixels > t.maxFramePixels;
  // The bytes decide the decoder: a BMP signature goes to the BMP reader under any image type,
  // anything else to sharp. RLE-compressed BMPs are refused (415) once their size is checked.
  return http(
    'bomb',
    `${b.name} (${b.bytes.length} bytes) as ${type}`,
    over
      ? { statuses: [413], codes: ['EDGE_ERR_FRAME_TOO_LARGE'] }
      : b.kind === 'bmp'
        ? { statuses: [415], codes: ['EDGE_ERR_UNSUPPORTED_MEDIA_TYPE'] }
        : { statuses: [200, 400, 429] },
    { body: b.bytes, headers: frameHeaders(rng, type) },
    rng,
  );
};

/** Bodies over BODY_LIMIT_BYTES, with Content-Length or chunked, under good and bad types. */
const overLimit: Family = (rng, c, t) => {
  const s = seedOf(rng, c);
  const extra = rng.weighted([
    [2, 1],
    [2, rng.int(2, 4096)],
    [1, rng.int(4097, 100_000)],
  ]);
  const size = t.bodyLimitBytes + extra;
  const body = Buffer.alloc(size, rng.int(0, 255));
  s.bytes.copy(body, 0);
  const type = rng.chance(0.8) ? MEDIA[s.kind] : 'application/octet-stream';
  const headers = frameHeaders(rng, type);
  if (type === 'application/octet-stream') {
    headers['x-frame-format'] = 'mono8';
    headers['x-frame-width'] = '1';
    headers['x-frame-height'] = String(size);
  }
  const chunks = rng.chance(0.3) ? rng.int(2, 8) : 0;
  return http(
    'over-limit',
    `${size} bytes (limit ${t.bodyLimitBytes}) as ${type}${chunks ? `, chunked ×${chunks}` : ''}`,
    { statuses: [413], codes: ['EDGE_ERR_BODY_TOO_LARGE'] },
    { body, headers, chunks },
    rng,
  );
};

const BAD_IDS = [
  'frame 1',
  'f'.repeat(129),
  '',
  'é',
  '\u00ff\u00fe',
  '"quoted"',
  '<script>',
  '../../etc/passwd',
  'a'.repeat(128),
  '%00',
  '${jndi:ldap://127.0.0.1:1/a}',
];

/** Optional headers with bad values, a very large header (under Node's 16 KiB), odd auth. */
const oddHeaders: Family = (rng, c) => {
  const s = seedOf(rng, c, rng.pick<ImageKind>(['png', 'jpeg']));
  const h: Record<string, string | string[]> = { 'content-type': MEDIA[s.kind] };
  const what: string[] = [];
  const n = rng.int(1, 3);
  for (let i = 0; i < n; i++) {
    switch (rng.int(0, 5)) {
      case 0:
        h['x-frame-id'] = rng.pick(BAD_IDS);
        what.push(`x-frame-id=${JSON.stringify(h['x-frame-id']).slice(0, 30)}`);
        break;
      case 1:
        h['x-camera-id'] = rng.pick(BAD_IDS);
        what.push(`x-camera-id=${JSON.stringify(h['x-camera-id']).slice(0, 30)}`);
        break;
      case 2:
        h['x-frame-id'] = ['a', 'b'];
        what.push('two x-frame-id lines');
        break;
      case 3:
        h['x-padding'] = 'p'.repeat(rng.int(1000, 12_000));
        what.push('large x-padding header');
        break;
      case 4:
        h.authorization = rng.pick([
          'Bearer ',
          'Bearer x',
          'Basic dXNlcjpwYXNz',
          'Bearer ' + 'x'.repeat(4000),
          'bearer  y',
        ]);
        what.push('authorization');
        break;
      default:
        h['x-frame-format'] = rng.pick(RAW_FORMATS);
        h['x-frame-width'] = rng.pick(DIM_TEXT);
        what.push('raw headers on an encoded frame');
    }
  }
  return http(
    'headers',
    `${s.name}: ${what.join(', ')}`,
    { statuses: [200, 400, 429] },
    { body: s.bytes, headers: h },
    rng,
  );
};

const PATHS = [
  '/v1/score/',
  '/V1/SCORE',
  '/v1//score',
  '/v1/score%00',
  '/v1/score/..%2f..%2fmetrics',
  '/v1/./score',
  '/v1/score?x=' + 'q'.repeat(3000),
  '/v1/score#frag',
  '/v2/score',
  '/score/',
  '/%2e%2e/v1/score',
  '/v1/model',
  '/metrics',
];

/** Odd methods and paths around the scoring routes. */
const routes: Family = (rng, c) => {
  const s = seedOf(rng, c, 'png');
  const method = rng.pick<HttpCase['method']>(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'POST']);
  const path = method === 'POST' ? rng.pick(PATHS) : rng.pick(['/v1/score', '/score', ...PATHS]);
  const expect: Expectation = { statuses: [200, ...ANY_4XX] };
  const body = method === 'GET' || method === 'HEAD' ? Buffer.alloc(0) : s.bytes;
  return http(
    'route',
    `${method} ${path.slice(0, 60)}`,
    expect,
    { method, path, body, headers: frameHeaders(rng, 'image/png') },
    rng,
  );
};

// ------------------------------------------------------------------ socket-level cases

const CRLF = '\r\n';
const head = (lines: string[]): string => `${lines.join(CRLF)}${CRLF}${CRLF}`;

/** Lying Content-Length, pipelining, garbage and smuggling attempts, hang-ups, on a raw socket. */
const socket: Family = (rng, c) => {
  const s = seedOf(rng, c, rng.pick<ImageKind>(['png', 'jpeg', 'bmp']));
  const type = MEDIA[s.kind];
  const variant = rng.int(0, 9);
  const base = (extra: string[], len: number | string): string =>
    head([
      'POST /v1/score HTTP/1.1',
      'Host: 127.0.0.1',
      `Content-Type: ${type}`,
      `Content-Length: ${len}`,
      ...extra,
    ]);
  const sock = (
    description: string,
    data: Buffer,
    responses: number,
    mode: SocketCase['mode'],
    statuses: readonly number[] = [200, ...ANY_4XX],
  ): Omit<SocketCase, 'index'> => ({
    transport: 'socket',
    kind: 'socket',
    description,
    expect: { statuses },
    data,
    responses,
    mode,
  });
  switch (variant) {
    case 0: {
      // Content-Length shorter than the body: the rest is read as the next request.
      const cl = rng.int(0, s.bytes.length - 1);
      const tail = rng.chance(0.5)
        ? rng.bytes(rng.int(1, 64))
        : Buffer.from(`GARBAGE /x HTTP/1.1${CRLF}${CRLF}`);
      return sock(
        `${s.name}: Content-Length ${cl} < body ${s.bytes.length}, then ${tail.length} bytes of garbage`,
        Buffer.concat([Buffer.from(base([], cl)), s.bytes, tail]),
        2,
        'wait',
      );
    }
    case 1: {
      // Content-Length longer than the body: the server waits, then must drop the connection.
      const extra = rng.int(1, 10_000);
      return sock(
        `${s.name}: Content-Length ${s.bytes.length + extra} > body ${s.bytes.length}`,
        Buffer.concat([Buffer.from(base([], s.bytes.length + extra)), s.bytes]),
        1,
        'idle',
        [...ANY_4XX],
      );
    }
    case 2: {
      // Pipelined: valid frame, health check, then garbage; the valid ones must be answered.
      const good = Buffer.concat([Buffer.from(base([], c.probe.length).replace(type, 'image/png')), c.probe]);
      const live = Buffer.from(head(['GET /v2/health/live HTTP/1.1', 'Host: 127.0.0.1']));
      const garbage = rng.chance(0.5)
        ? rng.bytes(rng.int(1, 200))
        : Buffer.from(`\x00\x01\x02 / HTTP/1.1${CRLF}${CRLF}`, 'latin1');
      return sock('pipelined: valid PNG, GET live, garbage', Buffer.concat([good, live, garbage]), 3, 'wait');
    }
    case 3: {
      const lines = rng.pick([
        'GARBAGE',
        'POST /v1/score HTTP/9.9',
        'POST /v1/score HTTP/1.1 extra',
        'post /v1/score HTTP/1.1',
        'POST  /v1/score  HTTP/1.1',
        'POST http://127.0.0.1/v1/score HTTP/1.1',
        'POST * HTTP/1.1',
        '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03',
        'PRI * HTTP/2.0',
      ]);
      return sock(
        `request line ${JSON.stringify(lines)}`,
        Buffer.from(head([lines, 'Host: 127.0.0.1', 'Content-Length: 0']), 'latin1'),
        1,
        'wait',
        [...ANY_4XX, 505],
      );
    }
    case 4: {
      // Smuggling shapes: CL + TE, two CLs, bad chunk sizes, obs-fold, NUL in a header.
      const [name, data] = rng.pick<[string, string]>([
        ['CL and TE', base(['Transfer-Encoding: chunked'], 5) + '0\r\n\r\n'],
        ['two Content-Lengths', base([`Content-Length: ${s.bytes.length + 5}`], s.bytes.length)],
        ['negative Content-Length', base([], -1)],
        ['Content-Length with sign', base([], `+${s.bytes.length}`)],
        ['hex Content-Length', base([], `0x${s.bytes.length.toString(16)}`)],
        ['huge Content-Length', base([], '99999999999999999999999')],
        [
          'bad chunk size',
          head([
            'POST /v1/score HTTP/1.1',
            'Host: 127.0.0.1',
            `Content-Type: ${type}`,
            'Transfer-Encoding: chunked',
          ]) + 'zz\r\nabc\r\n0\r\n\r\n',
        ],
        [
          'chunk size overflow',
          head([
            'POST /v1/score HTTP/1.1',
            'Host: 127.0.0.1',
            `Content-Type: ${type}`,
            'Transfer-Encoding: chunked',
          ]) + 'ffffffffffffffffff\r\nabc\r\n',
        ],
        [
          'TE gzip, chunked',
          head([
            'POST /v1/score HTTP/1.1',
            'Host: 127.0.0.1',
            `Content-Type: ${type}`,
            'Transfer-Encoding: gzip, chunked',
          ]) + '0\r\n\r\n',
        ],
        ['obs-fold header', base(['X-Frame-Id: a', ' folded'], 0)],
        ['NUL in a header', base(['X-Frame-Width: 3\x002'], 0)],
        ['CR in a header', base(['X-Frame-Id: a\rb'], 0)],
        ['header without colon', base(['X-Frame-Id a'], 0)],
        ['space before colon', base(['Content-Type : image/png'], 0)],
        ['no Host', head(['POST /v1/score HTTP/1.1', `Content-Type: ${type}`, 'Content-Length: 0'])],
        ['Expect: 100-continue', base(['Expect: 100-continue'], s.bytes.length) + s.bytes.toString('latin1')],
        ['Expect: nonsense', base(['Expect: 999-nope'], 0)],
        ['HTTP/1.0 without length', head(['POST /v1/score HTTP/1.0', `Content-Type: ${type}`]) + 'abc'],
        ['Connection: upgrade', base(['Connection: Upgrade', 'Upgrade: websocket'], 0)],
      ]);
      const statuses = name === 'HTTP/1.0 without length' ? [...ANY_4XX] : [200, ...ANY_4XX, 417];
      return sock(`${s.name}: ${name}`, Buffer.from(data, 'latin1'), 1, 'wait', statuses);
    }
    case 5: {
      // Hang up halfway through the body: nothing to answer, the daemon must just carry on.
      const cut = rng.int(0, s.bytes.length - 1);
      return sock(
        `${s.name}: hang up after ${cut}/${s.bytes.length} body bytes`,
        Buffer.concat([Buffer.from(base([], s.bytes.length)), s.bytes.subarray(0, cut)]),
        0,
        'hangup',
      );
    }
    case 6: {
      // Request line and headers only, never finished: the server must drop the connection.
      const partial = base([], s.bytes.length).slice(0, rng.int(1, 60));
      return sock(
        `unfinished head ${JSON.stringify(partial.slice(0, 30))}…`,
        Buffer.from(partial),
        1,
        'idle',
        [...ANY_4XX],
      );
    }
    case 7: {
      // A URL over Node's header limit.
      const url = `/v1/score?${'a'.repeat(rng.int(17_000, 70_000))}`;
      return sock(
        `URL of ${url.length} chars`,
        Buffer.from(head([`POST ${url} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Length: 0'])),
        1,
        'wait',
        [400, 413, 414, 431],
      );
    }
    case 8: {
      // Many small pipelined requests with bad frames, all on one connection.
      const n = rng.int(2, 6);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const b = mutate(rng, s.bytes, s.bytes, 1)[0];
        parts.push(Buffer.from(base([], b.length)), b);
      }
      return sock(`${n} pipelined mutated ${s.name}`, Buffer.concat(parts), n, 'wait');
    }
    default: {
      // Headers over Node's 16 KiB limit.
      const size = rng.int(17_000, 120_000);
      return sock(
        `header of ${size} bytes`,
        Buffer.from(base([`X-Big: ${'b'.repeat(size)}`], 0)),
        1,
        'wait',
        [400, 431],
      );
    }
  }
};

/** Slow senders: a few bytes per tick for the head, or for the body after a complete head. */
export function slowCase(c: Corpus, which: 'head' | 'body'): Omit<SocketCase, 'index'> {
  const body = c.probe;
  const requestHead = head([
    'POST /v1/score HTTP/1.1',
    'Host: 127.0.0.1',
    'Content-Type: image/png',
    `Content-Length: ${body.length}`,
  ]);
  return {
    transport: 'socket',
    kind: `slowloris-${which}`,
    description:
      which === 'head'
        ? 'slowloris: request head at 3 bytes every 250 ms'
        : `slowloris: complete head, then the ${body.length}-byte body at 3 bytes every 250 ms`,
    expect: { statuses: [...ANY_4XX] },
    data: which === 'head' ? Buffer.from(requestHead) : Buffer.concat([Buffer.from(requestHead), body]),
    responses: 1,
    mode: 'trickle',
    trickle: { bytes: 3, everyMs: 250, startAt: which === 'body' ? requestHead.length : 0 },
  };
}

const FAMILIES: readonly (readonly [number, Family])[] = [
  [40, mutated],
  [8, truncated],
  [7, dimensions],
  [5, bmpHeader],
  [10, raw],
  [5, contentType],
  [4, svg],
  [2, foreignFormat],
  [2, bomb],
  [2, overLimit],
  [4, oddHeaders],
  [2, routes],
  [2, socket],
];

/** Indices (mod 2000) that are slow senders; they run beside the others, not in their batches. */
const SLOW_HEAD = 7;
const SLOW_BODY = 13;

export class FrameFuzzer {
  constructor(
    readonly seed: number,
    private readonly corpus: Corpus,
    private readonly target: FuzzTarget,
  ) {}

  /** Case `index` of this seed; the same (seed, index) always gives the same case. */
  caseAt(index: number): FuzzCase {
    const slot = index % 2000;
    if (slot === SLOW_HEAD || slot === SLOW_BODY) {
      return { index, ...slowCase(this.corpus, slot === SLOW_HEAD ? 'head' : 'body') };
    }
    const rng = new FuzzRng(this.seed, index);
    const family = rng.weighted(FAMILIES);
    const c = { index, ...family(rng, this.corpus, this.target) } as FuzzCase;
    if (c.transport === 'http' && c.headers['content-type'] === 'image/bmp' && bmpPixelsMissing(c.body)) {
      // Pixels the file does not hold cannot be scored: refuse (400), or 413 when over the limit.
      c.expect = { statuses: c.expect.statuses.filter((s) => s === 400 || s === 413) };
      c.description += ' [pixel data shorter than the header says]';
    }
    return c;
  }
}

/**
 * True when an uncompressed BMP (BITMAPINFOHEADER or later; 1/4/8/16/24/32 bpp) declares more
 * rows than its pixel data holds, by the same arithmetic as the 24/32/8-bit fast path.
 */
export function bmpPixelsMissing(b: Buffer): boolean {
  if (b.length < 54 || b.toString('latin1', 0, 2) !== 'BM') return false;
  const dataOffset = b.readUInt32LE(10);
  const dib = b.readUInt32LE(14);
  const width = b.readInt32LE(18);
  const height = Math.abs(b.readInt32LE(22));
  const bpp = b.readUInt16LE(28);
  const compression = b.readUInt32LE(30);
  const uncompressed = compression === 0 || (compression === 3 && (bpp === 16 || bpp === 32));
  if (dib < 40 || b.length < 14 + dib || !uncompressed || ![1, 4, 8, 16, 24, 32].includes(bpp)) return false;
  if (width <= 0 || height === 0) return false;
  const rowBytes = Math.ceil((width * bpp) / 8);
  const stride = Math.ceil((width * bpp) / 32) * 4;
  return dataOffset + stride * (height - 1) + rowBytes > b.length;
}

export function isSlow(c: FuzzCase): boolean {
  return c.transport === 'socket' && (c.mode === 'trickle' || c.mode === 'idle');
}

// ------------------------------------------------------------------ running a case

/** Runs an HTTP case through an undici pool (keep-alive connections shared by the workers). */
export async function runHttpCase(pool: Pool, c: HttpCase, timeoutMs: number): Promise<CaseOutcome> {
  const started = performance.now();
  const body: Dispatcher.DispatchOptions['body'] =
    c.chunks > 0
      ? Readable.from(
          (function* chunked() {
            const size = Math.ceil(c.body.length / c.chunks);
            for (let i = 0; i < c.body.length; i += size) yield c.body.subarray(i, i + size);
          })(),
        )
      : c.body.length > 0 || c.method === 'POST'
        ? c.body
        : null;
  // Header values beyond latin1 go out as their UTF-8 bytes, as a careless client would send them.
  const wire = (v: string): string =>
    [...v].some((ch) => ch.charCodeAt(0) > 0xff) ? Buffer.from(v).toString('latin1') : v;
  const sent = Object.fromEntries(
    Object.entries(c.headers).map(([k, v]) => [k, Array.isArray(v) ? v.map(wire) : wire(v)]),
  );
  try {
    const res = await pool.request({
      method: c.method,
      path: c.path,
      headers: sent,
      body,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const text = await res.body.text();
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers))
      headers[k] = Array.isArray(v) ? v.join(', ') : (v ?? '');
    return {
      responses: [{ status: res.statusCode, headers, body: text }],
      closed: false,
      elapsedMs: performance.now() - started,
    };
  } catch (err) {
    const e = err as Error & { code?: string };
    return {
      responses: [],
      closed: true,
      elapsedMs: performance.now() - started,
      error: `${e.code ?? e.name}: ${e.message}`,
    };
  }
}

/** Parses consecutive HTTP/1.1 responses (Content-Length or chunked bodies; 1xx skipped). */
export function parseResponses(buf: Buffer): { responses: WireResponse[]; rest: Buffer } {
  const responses: WireResponse[] = [];
  let rest = buf;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
    if (!Number.isInteger(status)) break;
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let after = rest.subarray(end + 4);
    if (status >= 100 && status < 200) {
      rest = after;
      continue;
    }
    let body: Buffer;
    if (headers['transfer-encoding']?.includes('chunked')) {
      const parts: Buffer[] = [];
      let ok = false;
      for (;;) {
        const eol = after.indexOf('\r\n');
        if (eol < 0) break;
        const size = parseInt(after.subarray(0, eol).toString('latin1'), 16);
        if (!Number.isFinite(size) || after.length < eol + 2 + size + 2) break;
        parts.push(after.subarray(eol + 2, eol + 2 + size));
        after = after.subarray(eol + 2 + size + 2);
        if (size === 0) {
          ok = true;
          break;
        }
      }
      if (!ok) break;
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers['content-length'] ?? 0);
      if (after.length < length) break;
      body = after.subarray(0, length);
      after = after.subarray(length);
    }
    responses.push({ status, headers, body: body.toString() });
    rest = after;
  }
  return { responses, rest };
}

/**
 * Runs a socket case on a fresh connection. `wait` resolves once the expected responses arrived
 * (plus a short grace for anything unexpected) or the server closed; `idle`/`trickle` resolve
 * when the server closes or at `deadlineMs`, which the caller compares with REQUEST_TIMEOUT_MS.
 */
export function runSocketCase(origin: string, c: SocketCase, deadlineMs: number): Promise<CaseOutcome> {
  const { hostname, port } = new URL(origin);
  const started = performance.now();
  return new Promise((resolve) => {
    const sock = net.connect({ host: hostname, port: Number(port) });
    let buf = Buffer.alloc(0);
    let settled = false;
    let error: string | undefined;
    const timers: NodeJS.Timeout[] = [];
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      sock.destroy();
      const { responses, rest } = parseResponses(buf);
      resolve({
        responses,
        closed,
        elapsedMs: performance.now() - started,
        ...(error ? { error } : {}),
        ...(rest.length > 0 ? { trailing: rest.toString('latin1').slice(0, 300) } : {}),
      });
    };
    timers.push(setTimeout(() => finish(false), deadlineMs));
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (c.mode === 'wait' && parseResponses(buf).responses.length >= c.responses) {
        // Anything beyond the expected answers shows up within the grace period.
        timers.push(setTimeout(() => finish(false), 30));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the server answered (it closes on bad requests) is a normal end.
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE')
        error = `${err.code ?? err.name}: ${err.message}`;
    });
    sock.on('close', () => finish(true));
    sock.on('connect', () => {
      if (c.mode === 'trickle' && c.trickle) {
        const { bytes, everyMs, startAt } = c.trickle;
        if (startAt > 0) sock.write(c.data.subarray(0, startAt));
        let at = startAt;
        const tick = (): void => {
          if (settled || sock.destroyed) return;
          // Never send the last byte: the request must stay incomplete until the server gives up.
          const next = Math.min(at + bytes, c.data.length - 1);
          if (next > at) sock.write(c.data.subarray(at, next));
          at = next;
          timers.push(setTimeout(tick, everyMs));
        };
        tick();
        return;
      }
      sock.write(c.data);
      if (c.mode === 'hangup') timers.push(setTimeout(() => finish(false), 5));
    });
  });
}
