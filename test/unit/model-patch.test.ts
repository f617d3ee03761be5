import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { modelPatchCli } from '../../src/cli/model-patch.js';
import { parseDesired } from '../../src/twin/desired.js';
import { buildYoloV8Detector, writeModelDir } from '../helpers/onnx-builder.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await modelPatchCli(args, (s) => (out += s));
  return { code, out };
}

it('prints a desired patch with sha256, size and the manifest merged from model.json, metadata and graph', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-patch-'));
  const model = buildYoloV8Detector({
    batch: 'dynamic',
    height: 320,
    width: 320,
    classes: 2,
    predictions: [{ cx: 10, cy: 10, w: 4, h: 4, scores: [0.9, 0.1] }],
    metadata: { names: "{0: 'bridge', 1: 'missing'}", task: 'detect', imgsz: '[320, 320]' },
  });
  const { modelPath } = await writeModelDir(dir, model, { defectLabels: ['bridge'] });
  const { code, out } = await run([
    modelPath,
    '--url',
    'https://models.example.com/a.onnx',
    '--version',
    '12',
  ]);
  expect(code).toBe(0);
  const patch = JSON.parse(out) as { model: Record<string, unknown> };
  const bytes = await readFile(modelPath);
  expect(patch.model).toMatchObject({
    version: '12',
    task: 'detection',
    labels: ['bridge', 'missing'],
    defectLabels: ['bridge'],
    input: { width: 320, height: 320, resize: 'letterbox' },
    output: { format: 'yolov8' },
    url: 'https://models.example.com/a.onnx',
    sha256: createHash('sha256').update(bytes).digest('hex'),
    sizeBytes: bytes.length,
  });
  // What the daemon will accept from the twin.
  expect(parseDesired(patch).model?.sha256).toBe(patch.model.sha256);
});

it('refuses a URL the daemon would refuse, and a missing model', async () => {
  expect((await run(['x.onnx'])).code).toBe(2);
  expect((await run(['missing.onnx', '--url', 'ftp://example.com/m.onnx'])).code).toBe(1);
  expect((await run(['missing.onnx', '--url', 'https://example.com/m.onnx'])).code).toBe(1);
});
