import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { makeRaw } from '../helpers/frames.js';
import { postFrame, type Answer } from '../helpers/http.js';

/** Raw GenICam pixel formats over HTTP (README, "Raw pixel formats"): same scene, same answer. */

interface V1 {
  classification: { label: string; score: number }[];
}

let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

const W = 64;
const H = 48;
/** A scene with structure in every channel, so a channel or bit-order mistake changes scores. */
const scene = (x: number, y: number): number[] => [(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256];
const luma = (x: number, y: number): number => {
  const [r, g, b] = scene(x, y) as [number, number, number];
  return Math.round(0.299 * r + 0.587 * g + 0.114 * b);
};

function raw(format: string, body: Buffer, extra: Record<string, string> = {}): Promise<Answer> {
  return postFrame(`${daemon!.url}/v1/score`, body, 'application/octet-stream', {
    'x-frame-format': format,
    'x-frame-width': String(W),
    'x-frame-height': String(H),
    ...extra,
  });
}

function scores(a: Answer): Record<string, number> {
  expect(a.status, a.text).toBe(200);
  return Object.fromEntries((a.json as V1).classification.map((c) => [c.label, c.score]));
}

function expectAlike(a: Record<string, number>, b: Record<string, number>, tolerance: number): void {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  for (const k of Object.keys(a)) expect(Math.abs(a[k]! - b[k]!)).toBeLessThanOrEqual(tolerance);
}

describe('raw pixel formats', () => {
  it('mono16 (10, 12 and 16 significant bits) and mono12p score as mono8 of the same scene', async () => {
    daemon = await startDaemon();
    const mono8 = makeRaw(W, H, 1, (x, y) => [luma(x, y)]);
    const reference = scores(await raw('mono8', mono8));
    for (const bits of [10, 12, 16]) {
      const body = Buffer.alloc(W * H * 2);
      // The scene in the top 8 of `bits` bits, with noise below that the 8-bit view drops.
      for (let i = 0; i < W * H; i++)
        body.writeUInt16LE((mono8[i]! << (bits - 8)) | (i % (1 << (bits - 8))), i * 2);
      expectAlike(scores(await raw('mono16', body, { 'x-frame-bits': String(bits) })), reference, 0);
    }
    const packed = Buffer.alloc((W * H * 3) / 2);
    for (let i = 0, p = 0; i < W * H; i += 2, p += 3) {
      const a = (mono8[i]! << 4) | 5;
      const b = (mono8[i + 1]! << 4) | 9;
      packed[p] = a & 0xff;
      packed[p + 1] = (a >> 8) | ((b & 0x0f) << 4);
      packed[p + 2] = b >> 4;
    }
    expectAlike(scores(await raw('mono12p', packed)), reference, 0);
  });

  it('Bayer and YUV 4:2:2 frames score close to the rgb8 frame of the same scene', async () => {
    daemon = await startDaemon();
    const rgb = makeRaw(W, H, 3, scene);
    const reference = scores(await raw('rgb8', rgb));
    const tiles: Record<string, number[]> = {
      bayer_rg8: [0, 1, 1, 2],
      bayer_gr8: [1, 0, 2, 1],
      bayer_gb8: [1, 2, 0, 1],
      bayer_bg8: [2, 1, 1, 0],
    };
    for (const [format, tile] of Object.entries(tiles)) {
      const mosaic = Buffer.alloc(W * H);
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) mosaic[y * W + x] = rgb[(y * W + x) * 3 + tile[(y % 2) * 2 + (x % 2)]!]!;
      // Demosaicing only estimates the missing colours: close, not identical.
      expectAlike(scores(await raw(format, mosaic)), reference, 0.05);
    }
    // YUV from the same RGB (BT.601 full range, chroma averaged over each pair).
    const yuyv = Buffer.alloc(W * H * 2);
    const uyvy = Buffer.alloc(W * H * 2);
    const clamp = (v: number): number => Math.max(0, Math.min(255, Math.round(v)));
    for (let i = 0; i < W * H; i += 2) {
      const yuv = [i, i + 1].map((j) => {
        const [r, g, b] = [rgb[j * 3]!, rgb[j * 3 + 1]!, rgb[j * 3 + 2]!];
        const Y = 0.299 * r + 0.587 * g + 0.114 * b;
        return [Y, 128 + 0.564 * (b - Y), 128 + 0.713 * (r - Y)] as const;
      });
      const u = clamp((yuv[0]![1] + yuv[1]![1]) / 2);
      const v = clamp((yuv[0]![2] + yuv[1]![2]) / 2);
      const [y0, y1] = [clamp(yuv[0]![0]), clamp(yuv[1]![0])];
      yuyv.set([y0, u, y1, v], i * 2);
      uyvy.set([u, y0, v, y1], i * 2);
    }
    const yuyvScores = scores(await raw('yuv422_yuyv', yuyv));
    expectAlike(yuyvScores, reference, 0.05);
    expectAlike(scores(await raw('yuv422_uyvy', uyvy)), yuyvScores, 0);
  });

  it('a wrong length is 422 and headers a format cannot carry are 400, with codes', async () => {
    daemon = await startDaemon();
    const short = await raw('mono16', Buffer.alloc(W * H * 2 - 1));
    expect(short.status).toBe(422);
    expect(short.json).toMatchObject({ error: { code: 'EDGE_ERR_RAW_SIZE_MISMATCH' } });
    const packed = await raw('mono12p', Buffer.alloc(W * H * 2));
    expect(packed.status).toBe(422);
    for (const [format, bits] of [
      ['mono16', '14'],
      ['mono16', 'x'],
      ['mono8', '16'],
    ] as const) {
      const a = await raw(format, Buffer.alloc(W * H * 2), { 'x-frame-bits': bits });
      expect(a.status).toBe(400);
      expect(a.json).toMatchObject({ error: { code: 'EDGE_ERR_RAW_HEADERS_INVALID' } });
    }
    const unknown = await raw('rgba8', Buffer.alloc(W * H * 4));
    expect(unknown.status).toBe(400);
    expect(unknown.json).toMatchObject({ error: { code: 'EDGE_ERR_RAW_HEADERS_INVALID' } });
    // The daemon still scores the next good frame.
    expect(scores(await raw('mono8', Buffer.alloc(W * H, 90)))).toHaveProperty('ok');
  });
});
