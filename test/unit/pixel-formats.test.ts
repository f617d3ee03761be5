import { describe, expect, it } from 'vitest';
import { ErrorCodes, type EdgeError } from '../../src/errors.js';
import { decodeRaw, PIXEL_FORMAT_NAMES } from '../../src/scoring/pixel-formats/index.js';
import { prepareFrame } from '../../src/scoring/preprocess.js';
import type { InputSpec } from '../../src/scoring/manifest.js';

/** Raw pixel formats decode to hand-computed 8-bit pixels (README, "Raw pixel formats"). */

const bytes = (...v: number[]): Buffer => Buffer.from(v);
const list = (b: Buffer): number[] => [...b];

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as EdgeError).code;
  }
  return undefined;
}

describe('pixel formats', () => {
  it('lists every PFNC format the README documents', () => {
    expect(PIXEL_FORMAT_NAMES).toEqual([
      'mono8',
      'rgb8',
      'bgr8',
      'mono16',
      'mono12p',
      'bayer_rg8',
      'bayer_gr8',
      'bayer_gb8',
      'bayer_bg8',
      'yuv422_yuyv',
      'yuv422_uyvy',
    ]);
  });

  it('mono16 is little-endian and keeps the 8 most significant of the declared bits', () => {
    // 0x1234 → 0x12 at 16 bits; 0x0abc (12 bits) → 0xab; 0x03ff (10 bits) → 0xff; 0x0200 → 0x80.
    const body16 = bytes(0x34, 0x12, 0xff, 0xff, 0x00, 0x00);
    expect(list(decodeRaw(body16, { format: 'mono16', width: 3, height: 1 }).data)).toEqual([0x12, 0xff, 0]);
    const body12 = bytes(0xbc, 0x0a, 0xff, 0x0f, 0xff, 0xff);
    // The last pixel is above 12 bits: it saturates.
    expect(list(decodeRaw(body12, { format: 'mono16', width: 3, height: 1, bits: 12 }).data)).toEqual([
      0xab, 0xff, 0xff,
    ]);
    const body10 = bytes(0xff, 0x03, 0x00, 0x02);
    expect(list(decodeRaw(body10, { format: 'mono16', width: 2, height: 1, bits: 10 }).data)).toEqual([
      0xff, 0x80,
    ]);
  });

  it('mono12p unpacks a ramp: two pixels in three bytes, least significant bits first', () => {
    // A 12-bit ramp 0x000, 0x111, …, 0x888 packed by hand (p0 lo | p0 hi + p1 lo << 4 | p1 hi).
    const ramp = [0x000, 0x111, 0x222, 0x333, 0x444, 0x555, 0x666, 0x777, 0x888];
    const packed: number[] = [];
    for (let i = 0; i < ramp.length; i += 2) {
      const a = ramp[i]!;
      const b = ramp[i + 1];
      packed.push(a & 0xff);
      if (b === undefined) {
        packed.push(a >> 8);
      } else {
        packed.push((a >> 8) | ((b & 0x0f) << 4), b >> 4);
      }
    }
    expect(packed.slice(0, 6)).toEqual([0x00, 0x10, 0x11, 0x22, 0x32, 0x33]);
    const out = decodeRaw(Buffer.from(packed), { format: 'mono12p', width: 3, height: 3 });
    expect(out.channels).toBe(1);
    expect(list(out.data)).toEqual([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
  });

  it('a Bayer mosaic of one colour demosaics to that colour in every pattern', () => {
    const colour = [200, 100, 50];
    const tiles: Record<string, number[]> = {
      bayer_rg8: [0, 1, 1, 2],
      bayer_gr8: [1, 0, 2, 1],
      bayer_gb8: [1, 2, 0, 1],
      bayer_bg8: [2, 1, 1, 0],
    };
    for (const [format, tile] of Object.entries(tiles)) {
      const w = 6;
      const h = 4;
      const mosaic = Buffer.alloc(w * h);
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) mosaic[y * w + x] = colour[tile[(y % 2) * 2 + (x % 2)]!]!;
      const out = decodeRaw(mosaic, { format, width: w, height: h });
      expect(out.channels).toBe(3);
      for (let i = 0; i < w * h; i++) expect(list(out.data.subarray(i * 3, i * 3 + 3))).toEqual(colour);
    }
  });

  it('a Bayer checkerboard demosaics bilinearly to hand-computed pixels', () => {
    // bayer_rg8, 4 × 4: R sites 100, B sites 20, G sites alternate 0 / 80 as a checkerboard of
    // 2 × 2 tiles (tile (0,0) and (1,1) have G = 80, the others G = 0).
    //   R G R G        100  80 100   0
    //   G B G B   →     80  20   0  20
    //   R G R G        100   0 100  80
    //   G B G B          0  20  80  20
    const m = [100, 80, 100, 0, 80, 20, 0, 20, 100, 0, 100, 80, 0, 20, 80, 20];
    const out = decodeRaw(Buffer.from(m), { format: 'bayer_rg8', width: 4, height: 4 });
    const px = (x: number, y: number): number[] =>
      list(out.data.subarray((y * 4 + x) * 3, (y * 4 + x) * 3 + 3));
    // (0,0) R site at the corner: G = mean(80 right, 80 below) = 80, B = the one diagonal 20.
    expect(px(0, 0)).toEqual([100, 80, 20]);
    // (1,1) B site inside: R = mean of 4 diagonals (100 ×4) = 100,
    // G = mean(80 up, 80 left, 0 right, 0 down) = 40.
    expect(px(1, 1)).toEqual([100, 40, 20]);
    // (2,2) R site inside: G = mean(0 up, 0 left, 80 right, 80 down) = 40, B = 20.
    expect(px(2, 2)).toEqual([100, 40, 20]);
    // (1,0) G site on the top edge: R = mean(100, 100) = 100, B = the one below, 20.
    expect(px(1, 0)).toEqual([100, 80, 20]);
    // (0,1) G site on the left edge (value 80): R = mean(100 above, 100 below), B = 20 right.
    expect(px(0, 1)).toEqual([100, 80, 20]);
    // (3,3) B site in the corner: R = the one diagonal (2,2) = 100, G = mean(80 up, 80 left) = 80.
    expect(px(3, 3)).toEqual([100, 80, 20]);
  });

  it('Bayer demosaicing equals the 3 × 3 neighbourhood mean on random mosaics of any size', () => {
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) % 256;
    const tile = [1, 2, 0, 1]; // bayer_gb8
    for (const [w, h] of [
      [9, 7],
      [2, 2],
      [1, 5],
    ] as const) {
      const m = Buffer.from(Array.from({ length: w * h }, rnd));
      const out = decodeRaw(m, { format: 'bayer_gb8', width: w, height: h });
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const own = tile[(y % 2) * 2 + (x % 2)]!;
          for (let c = 0; c < 3; c++) {
            let sum = 0;
            let n = 0;
            for (let yy = y - 1; yy <= y + 1; yy++)
              for (let xx = x - 1; xx <= x + 1; xx++) {
                if (yy < 0 || xx < 0 || yy >= h || xx >= w || tile[(yy % 2) * 2 + (xx % 2)] !== c) continue;
                sum += m[yy * w + xx]!;
                n++;
              }
            const want = c === own ? m[y * w + x]! : n ? Math.round(sum / n) : 0;
            expect(out.data[(y * w + x) * 3 + c], `${w}x${h} (${x},${y}) c${c}`).toBe(want);
          }
        }
    }
  });

  it('YUV 4:2:2 in both byte orders converts with BT.601 full range', () => {
    // Y0=76 U=85 Y1=150 V=255 → pixel 0: R = 76 + 1.402·127 = 254.05 → 254,
    // G = 76 − 0.344136·(−43) − 0.714136·127 = 76 + 14.80 − 90.70 = 0.10 → 0, B = 76 + 1.772·(−43) = −0.2 → 0.
    // pixel 1: R = 150 + 178.05 → 255 (clamped), G = 150 − 75.90 = 74.10 → 74, B = 150 − 76.20 = 73.80 → 74.
    const want = [254, 0, 0, 255, 74, 74];
    expect(
      list(decodeRaw(bytes(76, 85, 150, 255), { format: 'yuv422_yuyv', width: 2, height: 1 }).data),
    ).toEqual(want);
    expect(
      list(decodeRaw(bytes(85, 76, 255, 150), { format: 'yuv422_uyvy', width: 2, height: 1 }).data),
    ).toEqual(want);
    // Neutral chroma is grey.
    expect(
      list(decodeRaw(bytes(128, 90, 128, 200), { format: 'yuv422_uyvy', width: 2, height: 1 }).data),
    ).toEqual([90, 90, 90, 200, 200, 200]);
  });

  it('refuses wrong lengths (422) and headers the format cannot carry (400)', () => {
    expect(codeOf(() => decodeRaw(Buffer.alloc(7), { format: 'mono16', width: 2, height: 2 }))).toBe(
      ErrorCodes.RAW_SIZE_MISMATCH,
    );
    // 5 mono12p pixels take ceil(7.5) = 8 bytes.
    expect(
      codeOf(() => decodeRaw(Buffer.alloc(8), { format: 'mono12p', width: 5, height: 1 })),
    ).toBeUndefined();
    expect(codeOf(() => decodeRaw(Buffer.alloc(9), { format: 'mono12p', width: 5, height: 1 }))).toBe(
      ErrorCodes.RAW_SIZE_MISMATCH,
    );
    expect(codeOf(() => decodeRaw(Buffer.alloc(4), { format: 'yuv422_yuyv', width: 1, height: 2 }))).toBe(
      ErrorCodes.RAW_HEADERS_INVALID,
    );
    expect(
      codeOf(() => decodeRaw(Buffer.alloc(8), { format: 'mono16', width: 2, height: 2, bits: 14 })),
    ).toBe(ErrorCodes.RAW_HEADERS_INVALID);
    expect(codeOf(() => decodeRaw(Buffer.alloc(4), { format: 'mono8', width: 2, height: 2, bits: 16 }))).toBe(
      ErrorCodes.RAW_HEADERS_INVALID,
    );
    expect(codeOf(() => decodeRaw(Buffer.alloc(4), { format: 'mono32', width: 2, height: 2 }))).toBe(
      ErrorCodes.RAW_HEADERS_INVALID,
    );
  });

  it('a mono16 frame and the mono8 frame of the same scene give the same tensor', async () => {
    const w = 16;
    const h = 12;
    const mono8 = Buffer.alloc(w * h);
    const mono16 = Buffer.alloc(w * h * 2);
    for (let i = 0; i < w * h; i++) {
      const v = (i * 37) % 256;
      mono8[i] = v;
      // 12 significant bits: the scene's value in the top 8, sensor noise in the low 4.
      mono16.writeUInt16LE((v << 4) | (i % 16), i * 2);
    }
    const spec: InputSpec = {
      width: 8,
      height: 6,
      resize: 'stretch',
      color: 'rgb',
      layout: 'nchw',
      dtype: 'float32',
      scale: 1 / 255,
      mean: [0],
      std: [1],
      padValue: 114,
    };
    const limits = { maxPixels: 1e6 };
    const a = await prepareFrame(
      { body: mono8, mediaType: 'application/octet-stream', raw: { format: 'mono8', width: w, height: h } },
      spec,
      limits,
    );
    const b = await prepareFrame(
      {
        body: mono16,
        mediaType: 'application/octet-stream',
        raw: { format: 'mono16', width: w, height: h, bits: 12 },
      },
      spec,
      limits,
    );
    expect([...b.data]).toEqual([...a.data]);
  });
});
