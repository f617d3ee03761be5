import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { rolloutCli, type LayeredDeployment } from '../../src/cli/rollout.js';
import { parseDesired } from '../../src/twin/desired.js';
import { versionedModel } from '../helpers/lifecycle.js';
import { writeModelDir } from '../helpers/onnx-builder.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await rolloutCli(
    args,
    (s) => (out += s),
    (s) => (err += s),
  );
  return { code, out, err };
}

async function modelFile(version: string): Promise<{ modelPath: string; sha256: string }> {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-rollout-'));
  const m = versionedModel(version);
  const { modelPath } = await writeModelDir(dir, m.bytes, m.manifest);
  return { modelPath, sha256: m.sha256 };
}

const URL = 'https://models.example.com/pcb/8/model.onnx?sv=2024&sig=x';

it('prints a layered deployment that sets the model by path for one ring', async () => {
  const { modelPath, sha256 } = await modelFile('8');
  const { code, out } = await run([
    modelPath,
    '--url',
    URL,
    '--version',
    '8',
    '--target-condition',
    "tags.ring='canary'",
    '--priority',
    '20',
  ]);
  expect(code).toBe(0);
  const d = JSON.parse(out) as LayeredDeployment;
  expect(Object.keys(d).sort()).toEqual(['content', 'metrics', 'priority', 'targetCondition']);
  expect(d.targetCondition).toBe("tags.ring='canary'");
  expect(d.priority).toBe(20);
  // A layered deployment needs $edgeAgent, even empty, and sets the model by path so it merges.
  expect(d.content.modulesContent.$edgeAgent).toEqual({});
  expect(Object.keys(d.content.modulesContent['edge-scorer']!)).toEqual(['properties.desired.model']);
  const block = d.content.modulesContent['edge-scorer']!['properties.desired.model'] as Record<
    string,
    unknown
  >;
  expect(block).toMatchObject({ name: 'line-classifier', version: '8', url: URL, sha256 });
  expect(parseDesired({ model: block }).model?.sha256).toBe(sha256);
  expect(d.metrics.queries.active).toBe(
    "SELECT deviceId FROM devices.modules WHERE moduleId='edge-scorer' AND properties.reported.model.version='8' AND properties.reported.model.status='active'",
  );
  expect(Object.keys(d.metrics.queries).sort()).toEqual(['active', 'failed', 'pending']);
});

it('prints a shadow-trial deployment with the candidate block and its metrics', async () => {
  const { modelPath } = await modelFile('9');
  const { code, out } = await run([
    modelPath,
    '--url',
    URL,
    '--version',
    '9',
    '--target-condition',
    "tags.ring='canary' AND tags.line='smt-3'",
    '--priority',
    '30',
    '--candidate',
    '--sample-rate',
    '0.5',
    '--module',
    'scorer',
  ]);
  expect(code).toBe(0);
  const d = JSON.parse(out) as LayeredDeployment;
  expect(Object.keys(d.content.modulesContent).sort()).toEqual(['$edgeAgent', 'scorer']);
  const block = d.content.modulesContent.scorer!['properties.desired.candidate'] as Record<string, unknown>;
  expect(block).toMatchObject({ version: '9', sampleRate: 0.5 });
  expect(parseDesired({ candidate: block }).candidate?.sampleRate).toBe(0.5);
  expect(Object.keys(d.metrics.queries).sort()).toEqual([
    'agreementBelowBar',
    'candidateActive',
    'candidateFailed',
    'promoted',
  ]);
  for (const q of Object.values(d.metrics.queries)) expect(q).toContain("moduleId='scorer'");
  expect(d.metrics.queries.agreementBelowBar).toContain('properties.reported.candidate.agreement < 0.98');
});

it('refuses bad input with a code and prints nothing', async () => {
  const { modelPath } = await modelFile('8');
  const base = [modelPath, '--url', URL, '--version', '8', '--target-condition', "tags.ring='canary'"];
  const negative = await run([...base, '--priority=-1']);
  expect(negative).toMatchObject({ code: 1, out: '' });
  expect(negative.err).toContain('EDGE_ERR_BAD_REQUEST');
  const quote = await run([
    modelPath,
    '--url',
    URL,
    '--version',
    "8'",
    '--target-condition',
    'x',
    '--priority',
    '1',
  ]);
  // The manifest's version pattern already refuses a quote, which would break the queries.
  expect(quote.code).toBe(1);
  expect(quote.err).toContain('EDGE_ERR_MANIFEST_INVALID');
  const rate = await run([...base, '--priority', '1', '--candidate', '--sample-rate', '2']);
  expect(rate.code).toBe(1);
  expect(rate.err).toContain('EDGE_ERR_DESIRED_INVALID');
  const http = await run([
    modelPath,
    '--url',
    'http://example.com/m.onnx',
    '--version',
    '8',
    '--target-condition',
    'x',
    '--priority',
    '1',
  ]);
  expect(http.code).toBe(1);
  expect(http.err).toContain('EDGE_ERR_MODEL_URL_REFUSED');
  // A missing required flag, or --sample-rate without --candidate: usage, exit 2.
  expect((await run(base)).code).toBe(2);
  expect((await run([...base, '--priority', '1', '--sample-rate', '0.5'])).code).toBe(2);
});
