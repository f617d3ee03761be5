import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { inferFrame } from '../../src/scoring/infer-frame.js';
import type { ModelRuntime } from '../../src/scoring/model-runtime.js';
import { deferSmallPng, prepareFrame, type FrameInput } from '../../src/scoring/preprocess.js';
import { makeRaw } from '../helpers/frames.js';
import { buildIdentityModel, writeModelDir } from '../helpers/onnx-builder.js';
import { loadRuntime } from '../helpers/runtime.js';

/**
 * On the CPU provider a small PNG is decoded by the inference worker that runs its batch, straight
 * into its slot of the batch tensor (docs/architecture.md, "The path of a frame"). The model here
 * is the identity, so each answer is the very tensor the model saw: it must be, value for value,
 * the tensor the event loop's own pre-processing makes of the frame, whatever shares the batch
 * (other PNGs, frames prepared on the event loop, PNGs the worker's decoder refuses and sharp
 * decodes instead) and whatever the batch held before.
 */

const W = 64;
const H = 32;
const LIMITS = { maxPixels: 1e8 };

let dir: string | undefined;
let runtime: ModelRuntime | undefined;
afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A chunk inserted after IHDR: a gAMA is valid PNG that the in-memory decoder does not take. */
function withChunk(png: Buffer, type: string, data: Buffer): Buffer {
  const chunk = Buffer.alloc(12 + data.length);
  chunk.writeUInt32BE(data.length, 0);
  chunk.write(type, 4, 'latin1');
  data.copy(chunk, 8);
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + data.length)), 8 + data.length);
  return Buffer.concat([png.subarray(0, 33), chunk, png.subarray(33)]);
}

/** Who decodes a frame: its worker, the event loop after the worker's decoder refused it, or only the event loop. */
type Decoder = 'worker' | 'refused' | 'event loop';

async function frames(): Promise<{ frame: FrameInput; decoder: Decoder }[]> {
  const out: { frame: FrameInput; decoder: Decoder }[] = [];
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 40; i++) {
    const w = 12 + rand(240);
    const h = 8 + rand(Math.min(240, Math.floor(65_536 / w) - 8));
    const raw = makeRaw(w, h, 3, (x, y) => [
      (x * 5 + i * 31) % 256,
      (y * 9 + i * 17) % 256,
      (x * y + i) % 256,
    ]);
    const image = sharp(raw, { raw: { width: w, height: h, channels: 3 } });
    const kind = i % 5;
    let body: Buffer =
      kind === 1
        ? await image.greyscale().png().toBuffer()
        : kind === 2
          ? await image.png({ palette: true, colours: 64 }).toBuffer()
          : await image.png({ compressionLevel: i % 9 }).toBuffer();
    if (kind === 3) body = withChunk(body, 'gAMA', Buffer.from([0, 0, 0xb1, 0x8f]));
    out.push({ frame: { body, mediaType: 'image/png' }, decoder: kind === 3 ? 'refused' : 'worker' });
    if (i % 8 === 4) {
      // Frames the event loop prepares, in the same batches: a JPEG and a PNG too large to defer.
      const jpeg = await image.jpeg().toBuffer();
      out.push({ frame: { body: jpeg, mediaType: 'image/jpeg' }, decoder: 'event loop' });
      const big = makeRaw(300, 240, 3, (x, y) => [(x + i) % 256, y % 256, (x ^ y) % 256]);
      const png = await sharp(big, { raw: { width: 300, height: 240, channels: 3 } })
        .png()
        .toBuffer();
      out.push({ frame: { body: png, mediaType: 'image/png' }, decoder: 'event loop' });
    }
  }
  return out;
}

describe('small PNGs decoded by the inference workers', () => {
  for (const [batch, workers, resize] of [
    ['dynamic', 1, 'letterbox'],
    [8, 2, 'stretch'],
  ] as const) {
    it(`give the event loop's tensor exactly (batch ${batch}, ${workers} worker(s), ${resize})`, async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'deferred-png-'));
      const manifest = {
        name: 'identity',
        version: '1',
        task: 'raw',
        input: { width: W, height: H, resize, padValue: 114, color: 'rgb', layout: 'nchw', scale: 1 / 255 },
        output: { format: 'raw' },
      };
      const model = buildIdentityModel({ batch, dims: [3, H, W] });
      const { modelPath } = await writeModelDir(path.join(dir, 'model'), model, manifest);
      runtime = await loadRuntime(modelPath, { workers, maxBatchSize: 8 });
      expect(runtime.decodesPngs).toBe(true);
      const rt = runtime;
      const all = await frames();
      for (const { frame, decoder } of all) {
        const deferred = deferSmallPng(frame, rt.manifest.input, LIMITS);
        expect(deferred !== undefined).toBe(decoder !== 'event loop');
      }
      const expected = await Promise.all(
        all.map(async ({ frame }) => (await prepareFrame(frame, rt.manifest.input, LIMITS)).data),
      );
      // Three passes, all frames at once, in three orders: batches fill, and the batch tensors a
      // worker keeps hold other frames' pixels when a refused frame's slot is skipped.
      const indices = all.map((_, i) => i);
      const orders = [
        indices,
        [...indices].reverse(),
        [...indices.filter((i) => i % 2), ...indices.filter((i) => !(i % 2))],
      ];
      for (const order of orders) {
        const answers = await Promise.all(order.map((i) => inferFrame(rt, all[i]!.frame, LIMITS)));
        expect(Math.max(...answers.map((a) => a.result.batchSize))).toBeGreaterThan(1);
        answers.forEach((a, k) => {
          const i = order[k]!;
          const seen = a.result.prediction.raw!.output!;
          expect(seen.dims).toEqual([1, 3, H, W]);
          expect(Float32Array.from(seen.data)).toEqual(expected[i]);
          expect(a.prepared.preprocessMs).toBeGreaterThan(0);
          expect(a.result.preprocessMs !== undefined).toBe(all[i]!.decoder === 'worker');
        });
      }
    });
  }
});
