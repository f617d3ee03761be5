import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { modelPatchCli } from '../../src/cli/model-patch.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { postFrame } from '../helpers/http.js';
import { buildHfClassifier, VIT_CONFIG, VIT_PREPROCESSOR } from '../helpers/model-families.js';
import { writeModelDir } from '../helpers/onnx-builder.js';

/**
 * A Hugging Face classifier (pixel_values → logits) with config.json and preprocessor_config.json
 * beside it, through the whole HTTP path and model-patch (docs/model-families.md).
 */

let daemon: Daemon | undefined;
let dir: string | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function hfModelDir(): Promise<{ dir: string; modelDir: string }> {
  const root = await mkdtemp(path.join(tmpdir(), 'edge-scorer-hf-'));
  const modelDir = path.join(root, 'model');
  await mkdir(modelDir, { recursive: true });
  await writeFile(path.join(modelDir, 'config.json'), JSON.stringify(VIT_CONFIG));
  await writeFile(path.join(modelDir, 'preprocessor_config.json'), JSON.stringify(VIT_PREPROCESSOR));
  return { dir: root, modelDir };
}

/** The logits are the per-channel means after (p / 255 − 0.5) / 0.5; softmax by hand. */
function expected(rgb: [number, number, number]): number[] {
  const logits = rgb.map((p) => (p / 255 - 0.5) / 0.5);
  const exps = logits.map((l) => Math.exp(l));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

it('labels from id2label, pre-processing from preprocessor_config.json, on /v1/score and /score', async () => {
  const made = await hfModelDir();
  dir = made.dir;
  daemon = await startDaemon({
    dir,
    model: buildHfClassifier(),
    manifest: { name: 'pcb-vit', version: '3', defectLabels: ['solder_bridge', 'missing'] },
  });
  const body = Buffer.alloc(20 * 10 * 3);
  for (let i = 0; i < body.length; i += 3) body.set([255, 0, 128], i);
  const headers = { 'x-frame-format': 'rgb8', 'x-frame-width': '20', 'x-frame-height': '10' };
  const res = await postFrame(`${daemon.url}/v1/score`, body, 'application/octet-stream', headers);
  expect(res.status).toBe(200);
  const a = res.json as { defect: boolean; classification: { label: string; score: number }[] };
  const [ok, bridge, missing] = expected([255, 0, 128]);
  expect(a.classification.map((c) => c.label)).toEqual(['ok', 'missing', 'solder_bridge']);
  expect(a.classification.map((c) => c.score)).toEqual([
    expect.closeTo(ok!, 5),
    expect.closeTo(missing!, 5),
    expect.closeTo(bridge!, 5),
  ]);
  expect(a.defect).toBe(false);

  const ava = await postFrame(`${daemon.url}/score`, body, 'application/octet-stream', headers);
  const tags = (ava.json as { inferences: { classification: { tag: { value: string } } }[] }).inferences;
  expect(tags.map((t) => t.classification.tag.value)).toEqual(['ok', 'missing', 'solder_bridge']);
});

it('model-patch carries the labels and pre-processing into the twin patch', async () => {
  const made = await hfModelDir();
  dir = made.dir;
  const { modelPath } = await writeModelDir(made.modelDir, buildHfClassifier());
  let out = '';
  const code = await modelPatchCli(
    [modelPath, '--url', 'https://models.example.com/vit.onnx'],
    (s) => (out += s),
  );
  expect(code).toBe(0);
  const patch = JSON.parse(out) as { model: Record<string, unknown> };
  expect(patch.model).toMatchObject({
    task: 'classification',
    labels: ['ok', 'solder_bridge', 'missing'],
    input: { width: 16, height: 16, resize: 'stretch', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
    output: { format: 'logits' },
  });
});
