import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { scoreBoard } from '../../src/scoring/board.js';
import type { InferenceWorker } from '../../src/scoring/inference-worker.js';
import type { ModelRuntime } from '../../src/scoring/model-runtime.js';
import { regionGeometry } from '../../src/scoring/regions.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { defaultTestModel } from '../helpers/daemon.js';
import { makeRaw } from '../helpers/frames.js';
import { writeModelDir } from '../helpers/onnx-builder.js';
import { loadRuntime } from '../helpers/runtime.js';

/**
 * A board's regions are cut by the runtime's inference workers (README, "Board layouts"): losing
 * one of them must cost the line nothing: its chunks are cut by the others, its batches go to a
 * live worker while a replacement loads, and nothing reaches the process as an unhandled
 * rejection (which the daemon treats as fatal).
 */

let dir: string | undefined;
let runtime: ModelRuntime | undefined;
/** Rejections nobody handled while a test ran; each test ends expecting none. */
const unhandled: unknown[] = [];
const onUnhandled = (err: unknown): void => {
  unhandled.push(err);
};
beforeEach(() => {
  unhandled.length = 0;
  process.on('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  process.off('unhandledRejection', onUnhandled);
  await runtime?.close();
  runtime = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const W = 640;
const H = 480;

async function setUp(workers: number) {
  dir = await mkdtemp(path.join(tmpdir(), 'board-worker-loss-'));
  const { model, manifest } = defaultTestModel();
  const { modelPath } = await writeModelDir(path.join(dir, 'model'), model, manifest);
  const rt = await loadRuntime(modelPath, { workers });
  runtime = rt;
  const raw = makeRaw(W, H, 3, (x, y) => [(x * 7 + y * 3) % 256, (x * y) % 256, (x + 2 * y) % 256]);
  const png = await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
    .png()
    .toBuffer();
  // 48 upright regions: enough to be cut by the workers, not the event loop.
  const regions = Array.from({ length: 48 }, (_, i) => ({
    id: `r${i}`,
    x: (i % 8) * 80,
    y: Math.floor(i / 8) * 80,
    width: 70 - (i % 3) * 7,
    height: 60,
  }));
  const metrics = new Metrics({ defaultMetrics: false });
  const score = async () =>
    (
      await scoreBoard(rt, { body: png, mediaType: 'image/png' }, regions, { maxPixels: 1e8 }, metrics)
    ).regions.map((r) => r.prediction);
  const workersOf = () => (rt as unknown as { workers: InferenceWorker[] }).workers;
  // The same board as cut jobs straight on the runtime, two jobs of 8 regions.
  const data = new SharedArrayBuffer(raw.length);
  new Uint8Array(data).set(raw);
  const shared = { data, width: W, height: H, channels: 3 as const, order: 'rgb' as const };
  const jobs = () =>
    [regions.slice(0, 8), regions.slice(8, 16)].map((rs) => {
      for (const _ of rs) rt.admit();
      return rt.submitCut(
        shared,
        rs,
        rs.map((r) => regionGeometry(r, rt.manifest.input)),
      );
    });
  return { score, workersOf, jobs };
}

/** Ends a worker's thread at once, as a crash would, whatever it is running. */
const crash = (w: InferenceWorker): Promise<number> =>
  (w as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();

describe('a board and the loss of an inference worker', () => {
  it('scores the same board the same way after a worker thread ended, and after its replacement', async () => {
    const { score, workersOf } = await setUp(2);
    const before = await score();
    expect(new Set(before.map((p) => JSON.stringify(p))).size).toBeGreaterThan(10);

    // End worker 0's thread while it is idle, as a crash would.
    const workers = workersOf();
    const lost = workers[0]!;
    await lost.close();
    expect(lost.dead).toBe(true);

    expect(await score()).toEqual(before);
    // The replacement took the dead worker's place and the board still answers the same.
    await expect.poll(() => workers[0] !== lost, { timeout: 10_000 }).toBe(true);
    expect(await score()).toEqual(before);
    expect(unhandled).toEqual([]);
  });

  it('with its only worker gone, a board fails with a code, never as an unhandled rejection, and the next one scores', async () => {
    const { score, workersOf } = await setUp(1);
    const before = await score();
    const lost = workersOf()[0]!;
    await lost.close();
    // Its chunks come back to the event loop, which cuts while the first batches fail on the dead
    // worker: the regions' rejections arrive before the board awaits them.
    await expect(score()).rejects.toMatchObject({ code: 'EDGE_ERR_INFERENCE_FAILED' });
    await expect.poll(() => workersOf()[0] !== lost, { timeout: 10_000 }).toBe(true);
    await expect
      .poll(async () => JSON.stringify(await score().catch(() => null)), { timeout: 10_000 })
      .toBe(JSON.stringify(before));
    expect(unhandled).toEqual([]);
  });

  it('a cut job whose worker dies under it is cut and inferred again by a live worker', async () => {
    const { jobs, workersOf } = await setUp(2);
    const before = await Promise.all(jobs().map((j) => j.result));
    expect(new Set(before.flat().map((r) => JSON.stringify(r.prediction))).size).toBeGreaterThan(4);

    // Worker 0's thread is ending but the runtime does not know yet: the two jobs go one to each
    // worker, and worker 0's job fails under it.
    const lost = workersOf()[0]!;
    const ended = crash(lost);
    const again = jobs();
    await ended;
    expect(predictionsOf(await Promise.all(again.map((j) => j.result)))).toEqual(predictionsOf(before));
    expect(lost.dead).toBe(true);
    expect(unhandled).toEqual([]);
  });

  it('with its only worker killed under it, a cut job fails with a code; the next goes to the replacement', async () => {
    const { jobs, workersOf } = await setUp(1);
    const before = await Promise.all(jobs().map((j) => j.result));
    const ended = crash(workersOf()[0]!);
    const [first, second] = jobs();
    await ended;
    await expect(first!.result).rejects.toMatchObject({ code: 'EDGE_ERR_INFERENCE_FAILED' });
    expect(predictionsOf([await second!.result])).toEqual(predictionsOf([before[1]!]));
    expect(runtime!.depth).toBe(0);
    expect(unhandled).toEqual([]);
  });
});

const predictionsOf = (answers: { prediction: unknown }[][]) =>
  answers.map((a) => a.map((r) => r.prediction));
