/**
 * What drift measurement costs an answer (README, "Drift"): the same daemon, serving the small
 * 192×48 classifier with a reference profile in its manifest, drift switched on and off in
 * alternating phases of one run (bench/ab.ts). With drift on, every answered frame is also decoded
 * to a 128×128 luma thumbnail and measured after its answer.
 *
 *   node --import tsx bench/drift.ts [--rounds 4] [--requests 300] [--seconds 4] [--clients 8]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { computeReference } from '../src/drift/reference-builder.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { boardFrame, rng } from '../test/helpers/frames.js';
import { writeModelDir } from '../test/helpers/onnx-builder.js';
import { abArgs, runAb } from './ab.js';
import { buildTinyClassifier, TINY_MANIFEST } from './tiny-model.js';

const opts = abArgs('bench/drift.ts', { rounds: 4, requests: 300, seconds: 4, clients: 8 });

const dir = await mkdtemp(path.join(tmpdir(), 'edge-drift-bench-'));
const model = buildTinyClassifier({ batch: 'dynamic' });
const manifest = TINY_MANIFEST;
const { modelPath } = await writeModelDir(path.join(dir, 'model'), model, manifest);
const frames = path.join(dir, 'reference');
await mkdir(frames);
const r = rng(5);
for (let i = 0; i < 100; i++) await writeFile(path.join(frames, `f${i}.jpg`), await boardFrame(r));
const reference = await computeReference(modelPath, frames);

const daemon = await startDaemon({ model, manifest: { ...manifest, reference }, env: { LOG_LEVEL: 'warn' } });
const frame = await sharp(await boardFrame(rng(6)))
  .resize(286, 30)
  .png()
  .toBuffer();
const measured = async (): Promise<number> => {
  const text = await daemon.app.metrics.registry.getSingleMetricAsString('edge_scorer_drift_frames_total');
  return Number(/outcome="measured"\} (\d+)/.exec(text)?.[1] ?? 0);
};

const ab = await runAb({
  url: `${daemon.url}/v1/score`,
  frame,
  mediaType: 'image/png',
  ...opts,
  apply: async (on) => daemon.app.drift.setSettings({ enabled: on, windowFrames: 500 }),
  settle: () => daemon.app.engine.frames.idle(),
  probe: async () => ({ measured: await measured() }),
});
const summary = {
  command: opts.command,
  frame: '286x30 PNG crop of a rendered board, the 192x48 bench classifier, a 100-frame reference',
  ...ab,
  measured: await measured(),
  droppedByStream: (
    await daemon.app.metrics.registry.getSingleMetricAsString('edge_scorer_frame_stream_dropped_total')
  )
    .split('\n')
    .filter((l) => l.includes('subscriber="drift"')),
};
console.log(JSON.stringify({ ...summary, rows: undefined }, null, 2));
await writeFile(
  new URL('./results/drift-latest.json', import.meta.url),
  JSON.stringify(summary, null, 2) + '\n',
);
await daemon.stop();
await rm(dir, { recursive: true, force: true });
