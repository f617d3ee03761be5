import { describe, expect, it } from 'vitest';
import { ErrorCodes, type EdgeError } from '../../src/errors.js';
import type { InputSpec } from '../../src/scoring/manifest.js';
import sharp from 'sharp';
import { geometryFor } from '../../src/scoring/geometry.js';
import { prepareFrame, type FrameInput } from '../../src/scoring/preprocess.js';
import { tensorize } from '../../src/scoring/tensor.js';
import {
  encodeFrame,
  gradientFrame,
  makeRaw,
  pngBomb,
  svgFrame,
  toBgr,
  type FrameFormat,
} from '../helpers/frames.js';

const W = 8;
const H = 6;
/** Every pixel distinct and position-dependent, so a flip, crop or channel swap shows. */
const px = (x: number, y: number): number[] => [10 + x * 20, 5 + y * 30, 200 - x * 7 - y * 11];
const RGB = makeRaw(W, H, 3, px);

function spec(over: Partial<InputSpec> = {}): InputSpec {
  return {
    width: W,
    height: H,
    resize: 'stretch',
    color: 'rgb',
    layout: 'nchw',
    dtype: 'float32',
    scale: 1 / 255,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    padValue: 114,
    ...over,
  };
}

const LIMITS = { maxPixels: 1_000_000 };

/** The tensor the manifest describes, computed independently from the source pixels. */
function expected(s: InputSpec, source: (x: number, y: number) => number[]): number[] {
  const out: number[] = [];
  const C = s.color === 'gray' ? 1 : 3;
  const value = (x: number, y: number, c: number): number => {
    const [r, g, b] = source(x, y) as [number, number, number];
    let p: number;
    if (s.color === 'gray') p = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
    else p = [r, g, b][s.color === 'bgr' ? 2 - c : c]!;
    if (s.dtype === 'uint8') return p;
    const mean = s.mean.length === 1 ? s.mean[0]! : s.mean[c]!;
    const std = s.std.length === 1 ? s.std[0]! : s.std[c]!;
    return (p * s.scale - mean) / std;
  };
  if (s.layout === 'nchw') {
    for (let c = 0; c < C; c++)
      for (let y = 0; y < s.height; y++) for (let x = 0; x < s.width; x++) out.push(value(x, y, c));
  } else {
    for (let y = 0; y < s.height; y++)
      for (let x = 0; x < s.width; x++) for (let c = 0; c < C; c++) out.push(value(x, y, c));
  }
  return out;
}

function expectClose(actual: ArrayLike<number>, want: number[], tolerance: number): void {
  expect(actual.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - want[i]!));
  expect(worst).toBeLessThanOrEqual(tolerance);
}

async function frameOf(
  format: FrameFormat | 'mono8' | 'rgb8' | 'bgr8',
  raw = RGB,
  channels: 1 | 3 = 3,
): Promise<FrameInput> {
  if (format === 'rgb8' || format === 'bgr8' || format === 'mono8') {
    const body = format === 'bgr8' ? toBgr(raw) : raw;
    return { body, mediaType: 'application/octet-stream', raw: { format, width: W, height: H } };
  }
  const body = await encodeFrame(raw, W, H, channels, format, { lossless: true, quality: 100 });
  return { body, mediaType: `image/${format}` as FrameInput['mediaType'] };
}

async function rejection(p: Promise<unknown>): Promise<EdgeError> {
  try {
    await p;
  } catch (err) {
    return err as EdgeError;
  }
  throw new Error('expected a rejection');
}

describe('prepareFrame: each input format decodes to the tensor the manifest describes', () => {
  // Lossless formats reproduce the pixels exactly: float32 error is rounding only.
  for (const format of ['png', 'webp', 'tiff', 'bmp', 'rgb8', 'bgr8'] as const) {
    it(`${format} → rgb nchw float32 with mean/std`, async () => {
      const s = spec();
      const out = await prepareFrame(await frameOf(format), s, LIMITS);
      expect(out.data).toBeInstanceOf(Float32Array);
      expectClose(out.data, expected(s, px), 1e-5);
      expect(out.geometry).toMatchObject({
        frameWidth: W,
        frameHeight: H,
        scaleX: 1,
        scaleY: 1,
        offsetX: 0,
        offsetY: 0,
      });
    });
  }

  it('jpeg (lossy) → within JPEG error of the source pixels', async () => {
    // A smooth frame keeps JPEG error small; compare in pixel units (uint8 tensor).
    const smooth = (x: number, y: number): number[] => [100 + x * 4, 80 + y * 4, 120];
    const s = spec({ dtype: 'uint8' });
    const out = await prepareFrame(await frameOf('jpeg', makeRaw(W, H, 3, smooth)), s, LIMITS);
    expectClose(out.data, expected(s, smooth), 4);
  });

  it('bgr colour order swaps channels, nhwc interleaves them', async () => {
    const s = spec({ color: 'bgr', layout: 'nhwc' });
    const out = await prepareFrame(await frameOf('png'), s, LIMITS);
    expectClose(out.data, expected(s, px), 1e-5);
    // first pixel, first channel is B of (0,0) = 200, normalised with the first mean/std
    expect(out.data[0]).toBeCloseTo((200 / 255 - 0.485) / 0.229, 5);
  });

  it('gray from a colour frame uses BT.601 luma; bgr8 input gives the same luma', async () => {
    const s = spec({ color: 'gray', mean: [0], std: [1], scale: 1 });
    const fromRgb = await prepareFrame(await frameOf('rgb8'), s, LIMITS);
    const fromBgr = await prepareFrame(await frameOf('bgr8'), s, LIMITS);
    expectClose(fromRgb.data, expected(s, px), 1e-6);
    expect(Array.from(fromBgr.data)).toEqual(Array.from(fromRgb.data));
  });

  it('mono8 raw feeds a gray model unchanged and an rgb model with repeated channels', async () => {
    const grey = makeRaw(W, H, 1, (x, y) => [x * 30 + y]);
    const g = (x: number, y: number): number[] => [x * 30 + y, x * 30 + y, x * 30 + y];
    const gray = spec({ color: 'gray', dtype: 'uint8' });
    const a = await prepareFrame(await frameOf('mono8', grey, 1), gray, LIMITS);
    expect(Array.from(a.data)).toEqual(expected(gray, g));
    const rgb = spec({ dtype: 'uint8' });
    const b = await prepareFrame(await frameOf('mono8', grey, 1), rgb, LIMITS);
    expect(Array.from(b.data)).toEqual(expected(rgb, g));
  });

  it('a grey PNG and a grey BMP decode to the same tensor', async () => {
    const grey = makeRaw(W, H, 1, (x, y) => [x * 30 + y]);
    const s = spec({ color: 'gray', dtype: 'uint8' });
    const png = await prepareFrame(await frameOf('png', grey, 1), s, LIMITS);
    const bmp = await prepareFrame(await frameOf('bmp', grey, 1), s, LIMITS);
    expect(Array.from(bmp.data)).toEqual(Array.from(png.data));
  });
});

/** Hand-written BMPs for the layouts the encoder in frames.ts does not write. */
function bmpFile(
  opts: { width: number; height: number; bpp: 8 | 24 | 32; topDown?: boolean; palette?: number[][] },
  pixel: (x: number, y: number) => number[],
): Buffer {
  const { width, height, bpp } = opts;
  const bytesPerPixel = bpp / 8;
  const stride = (width * bytesPerPixel + 3) & ~3;
  const paletteBytes = bpp === 8 ? 256 * 4 : 0;
  const offset = 14 + 40 + paletteBytes;
  const buf = Buffer.alloc(offset + stride * height);
  buf.write('BM', 0, 'latin1');
  buf.writeUInt32LE(buf.length, 2);
  buf.writeUInt32LE(offset, 10);
  buf.writeUInt32LE(40, 14);
  buf.writeInt32LE(width, 18);
  buf.writeInt32LE(opts.topDown ? -height : height, 22);
  buf.writeUInt16LE(1, 26);
  buf.writeUInt16LE(bpp, 28);
  if (bpp === 8) {
    for (let i = 0; i < 256; i++) {
      const [r, g, b] = opts.palette?.[i] ?? [i, i, i];
      buf.writeUInt8(b!, 54 + i * 4);
      buf.writeUInt8(g!, 54 + i * 4 + 1);
      buf.writeUInt8(r!, 54 + i * 4 + 2);
    }
  }
  for (let y = 0; y < height; y++) {
    const row = opts.topDown ? y : height - 1 - y;
    for (let x = 0; x < width; x++) {
      const p = pixel(x, y);
      const at = offset + row * stride + x * bytesPerPixel;
      if (bpp === 8) buf[at] = p[0]!;
      else {
        buf[at] = p[2]!;
        buf[at + 1] = p[1]!;
        buf[at + 2] = p[0]!;
        if (bpp === 32) buf[at + 3] = 0; // padding byte, often 0: must not act as alpha
      }
    }
  }
  return buf;
}

describe('BMP layouts', () => {
  const s = spec({ dtype: 'uint8' });
  const bmp = (body: Buffer): FrameInput => ({ body, mediaType: 'image/bmp' });

  it('24-bit bottom-up with row padding (width 8×3 = 24 is aligned; 5 wide is not)', async () => {
    const s5 = spec({ dtype: 'uint8', width: 5 });
    const out = await prepareFrame(bmp(bmpFile({ width: 5, height: H, bpp: 24 }, px)), s5, LIMITS);
    expect(Array.from(out.data)).toEqual(expected(s5, px));
  });

  it('24-bit top-down', async () => {
    const out = await prepareFrame(
      bmp(bmpFile({ width: W, height: H, bpp: 24, topDown: true }, px)),
      s,
      LIMITS,
    );
    expect(Array.from(out.data)).toEqual(expected(s, px));
  });

  it('32-bit BGRX whose fourth byte is 0 (not alpha)', async () => {
    const out = await prepareFrame(bmp(bmpFile({ width: W, height: H, bpp: 32 }, px)), s, LIMITS);
    expect(Array.from(out.data)).toEqual(expected(s, px));
  });

  it('8-bit grey palette and 8-bit colour palette', async () => {
    const grey = (x: number, y: number): number[] => [x * 30 + y];
    const sg = spec({ dtype: 'uint8', color: 'gray' });
    const a = await prepareFrame(bmp(bmpFile({ width: W, height: H, bpp: 8 }, grey)), sg, LIMITS);
    expect(Array.from(a.data)).toEqual(expected(sg, (x, y) => [x * 30 + y, x * 30 + y, x * 30 + y]));
    const palette = Array.from({ length: 256 }, (_, i) => [i, 255 - i, (i * 3) % 256]);
    const b = await prepareFrame(bmp(bmpFile({ width: W, height: H, bpp: 8, palette }, grey)), s, LIMITS);
    expect(Array.from(b.data)).toEqual(expected(s, (x, y) => palette[x * 30 + y]!));
  });

  it('truncated pixel data is undecodable; a huge declared size is too large', async () => {
    const full = bmpFile({ width: W, height: H, bpp: 24 }, px);
    const e1 = await rejection(prepareFrame(bmp(full.subarray(0, full.length - 30)), s, LIMITS));
    expect(e1.code).toBe(ErrorCodes.FRAME_UNDECODABLE);
    const huge = Buffer.from(full);
    huge.writeInt32LE(30000, 18);
    huge.writeInt32LE(30000, 22);
    const e2 = await rejection(prepareFrame(bmp(huge), s, LIMITS));
    expect(e2.code).toBe(ErrorCodes.FRAME_TOO_LARGE);
  });
});

describe('resize modes', () => {
  // A 16×8 frame into an 8×8 input: stretch halves x, letterbox pads rows, center-crop cuts columns.
  const wide = (x: number, y: number): number[] => [x * 16, y * 32, 77];
  const frame = async (): Promise<FrameInput> => ({
    body: await encodeFrame(makeRaw(16, 8, 3, wide), 16, 8, 3, 'png'),
    mediaType: 'image/png',
  });
  const square = spec({ width: 8, height: 8, dtype: 'uint8' });

  it('letterbox: content in the middle rows, pad value around, geometry maps back', async () => {
    const s = { ...square, resize: 'letterbox' as const, padValue: 114 };
    const out = await prepareFrame(await frame(), s, LIMITS);
    const plane = 64;
    // r = 0.5 → 8×4 content, 2 pad rows above and below
    for (const y of [0, 1, 6, 7])
      for (let x = 0; x < 8; x++) expect(out.data[plane * 2 + y * 8 + x]).toBe(114);
    for (const y of [2, 3, 4, 5]) expect(out.data[plane * 2 + y * 8 + 3]).toBe(77); // B channel constant
    expect(out.geometry).toMatchObject({ scaleX: 0.5, scaleY: 0.5, offsetX: 0, offsetY: 2 });
  });

  it('center-crop: keeps the middle 8 columns at full scale', async () => {
    const s = { ...square, resize: 'center-crop' as const };
    const out = await prepareFrame(await frame(), s, LIMITS);
    // r = 1 → no resample; columns 4..11 kept
    expect(Array.from(out.data.subarray(0, 8))).toEqual([4, 5, 6, 7, 8, 9, 10, 11].map((x) => x * 16));
    expect(out.geometry).toMatchObject({ scaleX: 1, scaleY: 1, offsetX: -4, offsetY: 0 });
  });

  it('stretch: output has the input size and per-axis scale', async () => {
    const s = { ...square, resize: 'stretch' as const };
    const out = await prepareFrame(await frame(), s, LIMITS);
    expect(out.data.length).toBe(3 * 64);
    expect(out.geometry).toMatchObject({ scaleX: 0.5, scaleY: 1, offsetX: 0, offsetY: 0 });
  });
});

describe('refusals carry codes', () => {
  const s = spec();
  it.each([
    ['empty body', { body: Buffer.alloc(0), mediaType: 'image/png' }, ErrorCodes.FRAME_UNDECODABLE],
    [
      'random bytes',
      { body: Buffer.from('not an image at all, just text'), mediaType: 'image/jpeg' },
      ErrorCodes.FRAME_UNDECODABLE,
    ],
    ['SVG sent as PNG', { body: svgFrame(), mediaType: 'image/png' }, ErrorCodes.UNSUPPORTED_MEDIA_TYPE],
    ['20000×20000 PNG bomb', { body: pngBomb(), mediaType: 'image/png' }, ErrorCodes.FRAME_TOO_LARGE],
    [
      'raw without headers',
      { body: Buffer.alloc(10), mediaType: 'application/octet-stream' },
      ErrorCodes.RAW_HEADERS_INVALID,
    ],
    [
      'raw size mismatch',
      {
        body: Buffer.alloc(10),
        mediaType: 'application/octet-stream',
        raw: { format: 'rgb8', width: 4, height: 4 },
      },
      ErrorCodes.RAW_SIZE_MISMATCH,
    ],
  ] as [string, FrameInput, string][])('%s', async (_name, frame, code) => {
    const err = await rejection(prepareFrame(frame, s, LIMITS));
    expect(err.code).toBe(code);
  });

  it('a truncated JPEG is undecodable', async () => {
    const jpg = await encodeFrame(makeRaw(64, 64, 3, px), 64, 64, 3, 'jpeg');
    const err = await rejection(
      prepareFrame({ body: jpg.subarray(0, jpg.length >> 1), mediaType: 'image/jpeg' }, s, LIMITS),
    );
    expect(err.code).toBe(ErrorCodes.FRAME_UNDECODABLE);
  });
});

describe('the decode paths against the previous one (sharp for every frame)', () => {
  /**
   * Before the decode work every encoded frame went through sharp: metadata(), then
   * resize(fill) → removeAlpha → raw. This is that path, to compare the tensors of the current one
   * with. JPEGs and large frames still take it (bit for bit the same); small PNG, raw and BMP frames
   * are resized in JavaScript with the same kernels, within the bounds below.
   */
  async function previous(body: Buffer, s: InputSpec): Promise<Uint8Array> {
    const meta = await sharp(body).metadata();
    const g = geometryFor(s.resize, meta.width, meta.height, s.width, s.height);
    let image = sharp(body, { failOn: 'warning', sequentialRead: true }).resize(
      g.resizeWidth,
      g.resizeHeight,
      {
        fit: 'fill',
      },
    );
    if (s.resize === 'letterbox') {
      const v = s.padValue;
      image = image.extend({
        top: g.padTop,
        bottom: g.padBottom,
        left: g.padLeft,
        right: g.padRight,
        background: { r: v, g: v, b: v, alpha: 1 },
      });
    } else if (s.resize === 'center-crop' && (g.resizeWidth !== s.width || g.resizeHeight !== s.height)) {
      image = image.extract({ left: g.cropLeft, top: g.cropTop, width: s.width, height: s.height });
    }
    const { data, info } = await image.removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return tensorize(data, info.channels, 'rgb', s) as Uint8Array;
  }

  /** Mean and largest absolute difference, in pixel levels (uint8 tensors). */
  function difference(a: ArrayLike<number>, b: ArrayLike<number>): { mean: number; max: number } {
    expect(a.length).toBe(b.length);
    let total = 0;
    let max = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      total += d;
      max = Math.max(max, d);
    }
    return { mean: total / a.length, max };
  }

  /** A text crop as the OCR step cuts them: light print on a green solder mask, 286×30. */
  const crop = (text: string): Promise<Buffer> =>
    sharp(
      Buffer.from(
        `<svg xmlns="http://www.w3.org/2000/svg" width="286" height="30"><rect width="286" height="30" fill="#1a3d22"/>` +
          `<text x="6" y="23" font-family="monospace" font-size="22" fill="#e8e8d8">${text}</text></svg>`,
      ),
    )
      .removeAlpha()
      .png()
      .toBuffer();

  const model = (over: Partial<InputSpec>): InputSpec =>
    spec({ width: 192, height: 48, dtype: 'uint8', ...over });

  // Measured (libvips 8.18 in sharp 0.35): mean 0.05–0.20 and max 2–3 levels in every mode; the
  // residue is rounding (libvips works in fixed point and rounds between its passes).
  it.each([
    ['stretch 286×30 → 192×48', model({})],
    ['letterbox 286×30 → 192×48', model({ resize: 'letterbox' })],
    ['center-crop 286×30 → 192×48', model({ resize: 'center-crop' })],
    ['stretch 286×30 → 128×16 (shrink only)', model({ width: 128, height: 16 })],
    ['gray 286×30 → 192×48', model({ color: 'gray', mean: [0], std: [1] })],
  ] as [string, InputSpec][])('small PNG, %s: within 0.3 levels on average, 4 at most', async (_name, s) => {
    for (const text of ['R1204 10k 0402', 'U7 STM32F405 LQFP64']) {
      const body = await crop(text);
      const now = await prepareFrame({ body, mediaType: 'image/png' }, s, LIMITS);
      const d = difference(now.data, await previous(body, s));
      expect(d.mean).toBeLessThanOrEqual(0.3);
      expect(d.max).toBeLessThanOrEqual(4);
    }
  });

  it('a small rgb8 raw frame and the same pixels as PNG give the same tensor', async () => {
    const body = await crop('C33 100n');
    const { data, info } = await sharp(body).raw().toBuffer({ resolveWithObject: true });
    const s = model({});
    const raw = await prepareFrame(
      {
        body: data,
        mediaType: 'application/octet-stream',
        raw: { format: 'rgb8', width: info.width, height: info.height },
      },
      s,
      LIMITS,
    );
    const png = await prepareFrame({ body, mediaType: 'image/png' }, s, LIMITS);
    expect(Array.from(raw.data)).toEqual(Array.from(png.data));
  });

  it('board-sized JPEG and PNG frames still go through sharp: the same tensor, bit for bit', async () => {
    const board = gradientFrame(640, 512);
    const s = model({});
    for (const format of ['jpeg', 'png'] as const) {
      const body = await encodeFrame(board, 640, 512, 3, format, { quality: 90 });
      const now = await prepareFrame({ body, mediaType: `image/${format}` }, s, { maxPixels: 1e7 });
      expect(difference(now.data, await previous(body, s))).toEqual({ mean: 0, max: 0 });
    }
  });

  // A small JPEG is decoded by libvips and resized by the kernels, as a small PNG: a libvips resize
  // pipeline cost more than such a frame's pixels (bench/README.md, "Decoding").
  it.each([
    ['colour', 3],
    ['grey', 1],
  ] as const)(
    'a small %s JPEG: its decoded pixels resized by the kernels, within 0.3 levels of sharp on average, 4 at most',
    async (_name, channels) => {
      const s = model({});
      for (const text of ['R1204 10k 0402', 'U7 STM32F405 LQFP64']) {
        let image = sharp(await crop(text));
        if (channels === 1) image = image.toColourspace('b-w');
        const body = await image.jpeg({ quality: 90 }).toBuffer();
        const now = await prepareFrame({ body, mediaType: 'image/jpeg' }, s, LIMITS);
        const d = difference(now.data, await previous(body, s));
        expect(d.mean).toBeLessThanOrEqual(0.3);
        expect(d.max).toBeLessThanOrEqual(4);
        // Exactly the tensor of the same decoded pixels posted raw.
        const decoded = sharp(body);
        if (channels === 1) decoded.toColourspace('b-w');
        const { data, info } = await decoded.raw().toBuffer({ resolveWithObject: true });
        expect(info.channels).toBe(channels);
        const format = channels === 1 ? 'mono8' : 'rgb8';
        const raw = await prepareFrame(
          { body: data, mediaType: 'application/octet-stream', raw: { format, width: 286, height: 30 } },
          s,
          LIMITS,
        );
        expect(Array.from(now.data)).toEqual(Array.from(raw.data));
      }
    },
  );

  it('a small CMYK JPEG goes through the sharp pipeline, which converts it: bit for bit', async () => {
    const body = await sharp(await crop('Q4 AO3400'))
      .toColourspace('cmyk')
      .jpeg()
      .toBuffer();
    expect((await sharp(body).metadata()).space).toBe('cmyk');
    const s = model({});
    const now = await prepareFrame({ body, mediaType: 'image/jpeg' }, s, LIMITS);
    expect(difference(now.data, await previous(body, s))).toEqual({ mean: 0, max: 0 });
  });
});
