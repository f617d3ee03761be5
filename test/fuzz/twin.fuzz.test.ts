import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator, type JsonObject } from '../helpers/iothub-emulator.js';
import { FuzzRng, fuzzSeed } from './frame-fuzzer.js';

/**
 * A seeded fuzzer of module-twin desired properties, through the real azure-iot-device-mqtt
 * client and the IoT Hub emulator: wrong types for every field, huge arrays and strings, deep
 * nesting, nulls, unknown and prototype-polluting keys, path-like names and versions, hostile
 * sha256 values and model URLs that must be refused (no MODEL_URL_ALLOWLIST), absurd numbers.
 * Each patch is followed by a reset patch that deletes what it added, so patches do not pile up.
 * FUZZ_SEED replays a run; TWIN_FUZZ_CASES sets the number of patches (default 300).
 */

const SEED = fuzzSeed();
const CASES = Number(process.env.TWIN_FUZZ_CASES ?? 300);
/** Every name, version and label the fuzzer invents carries this, so stray files can be found. */
const MARK = 'fzq';
const HEX64 = /^[0-9a-f]{64}$/;

type Expect = 'rejected' | 'url-refused' | 'applied' | 'any';

interface TwinCase {
  index: number;
  family: string;
  description: string;
  patch: JsonObject;
  expect: Expect;
}

// ------------------------------------------------------------------ the generator

/** A refused model URL: http/file without an allowlist, other schemes, relative forms. Never https. */
const REFUSED_URLS = [
  'file:///etc/passwd',
  'file://localhost/etc/passwd',
  'file:/etc/shadow',
  'FILE:///etc/passwd',
  'file:///C:/Windows/win.ini',
  'file://127.0.0.1/etc/passwd',
  'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
  'http://169.254.169.254/metadata/instance?api-version=2021-02-01',
  'http://[fd00:ec2::254]/latest/meta-data/',
  'http://127.0.0.1:1/model.onnx',
  'http://localhost/model.onnx?sv=2020&sig=FZQSIG',
  'http://user:pass@169.254.169.254/',
  'http:\\\\169.254.169.254\\model.onnx',
  'http://0xA9FEA9FE/',
  'http://2852039166/',
  'ftp://127.0.0.1/model.onnx',
  'gopher://127.0.0.1:6379/_FLUSHALL',
  'data:application/octet-stream;base64,AAAA',
  'javascript:alert(1)',
  'ws://127.0.0.1/model',
  '/etc/passwd',
  '../../etc/passwd',
  '\\\\server\\share\\model.onnx',
  '//169.254.169.254/model.onnx',
  'model.onnx',
  'file:///proc/self/environ',
  'file:///dev/zero',
  `file:///${'a/'.repeat(500)}model.onnx`,
];

const PATHY = [
  '../../etc',
  '..\\..\\',
  '/etc/passwd',
  '%2e%2e%2f',
  '..',
  '.',
  'a/../../b',
  'C:\\Windows',
  `${MARK}\u0000.onnx`,
  '\u0000',
  `${MARK}/x`,
  '~root',
  'con',
  `${MARK}\n`,
  '$(touch /tmp/pwned)',
  '`id`',
];

function validModel(rng: FuzzRng, i: number): JsonObject {
  return {
    name: `${MARK}-model-${i}`,
    version: `${MARK}.${rng.int(1, 999)}`,
    task: 'classification',
    labels: ['ok', 'bridge', 'missing'],
    defectLabels: ['bridge'],
    input: { width: 32, height: 32, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
    output: { format: 'logits', topK: 3 },
    url: rng.pick(REFUSED_URLS),
    sha256: hex(rng, 64),
  };
}

function hex(rng: FuzzRng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += '0123456789abcdef'[rng.int(0, 15)]!;
  return s;
}

/** Values of every JSON type, with the edges of numbers and strings. */
function wrongValue(rng: FuzzRng): unknown {
  return rng.pick<() => unknown>([
    () => 'x',
    () => '',
    () => '8',
    () => 'NaN',
    () => 'Infinity',
    () => -1,
    () => 0,
    () => 1.5,
    () => -1e308,
    () => 1e308,
    () => 2 ** 53 + 2,
    () => Number.MIN_VALUE,
    () => true,
    () => false,
    () => [],
    () => [1, 'a', null, {}],
    () => ({}),
    () => ({ nested: { deeper: 1 } }),
    () => 'x'.repeat(rng.int(129, 100_000)),
  ])();
}

const FIELDS: readonly (readonly [string, string])[] = [
  ['model', 'name'],
  ['model', 'version'],
  ['model', 'task'],
  ['model', 'labels'],
  ['model', 'defectLabels'],
  ['model', 'input'],
  ['model', 'output'],
  ['model', 'url'],
  ['model', 'sha256'],
  ['model', 'sizeBytes'],
  ['model.input', 'width'],
  ['model.input', 'height'],
  ['model.input', 'resize'],
  ['model.input', 'color'],
  ['model.input', 'layout'],
  ['model.input', 'dtype'],
  ['model.input', 'mean'],
  ['model.input', 'std'],
  ['model.input', 'padValue'],
  ['model.output', 'format'],
  ['model.output', 'topK'],
  ['model.output', 'scoreThreshold'],
  ['model.output', 'iouThreshold'],
  ['model.output', 'maxDetections'],
  ['scoring', 'executionProviders'],
  ['scoring', 'maxBatchSize'],
  ['scoring', 'maxBatchDelayMs'],
  ['scoring', 'workers'],
  ['scoring', 'maxQueue'],
  ['scoring', 'intraOpThreads'],
  ['scoring', 'intraOpSpinning'],
  ['telemetry', 'results'],
  ['telemetry', 'maxBatchMessages'],
  ['telemetry', 'flushIntervalMs'],
  ['telemetry', 'statsIntervalSec'],
];

/** Values that are valid for a field, to tell a wrong value from a merely different one. */
function acceptable(section: string, field: string, v: unknown): boolean {
  const int = (lo: number, hi: number): boolean =>
    Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
  const num = (lo: number, hi: number): boolean => typeof v === 'number' && v >= lo && v <= hi;
  const key = `${section}.${field}`;
  switch (key) {
    case 'model.input':
    case 'model.output':
      // Every input and output field is optional (the twin's block is laid over model.json, the
      // ONNX metadata and the documented defaults; README, "Models"), so an empty object is a
      // valid input or output spec; an object with an unknown key is not.
      return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
    case 'model.input.scale':
      return typeof v === 'number';
    case 'model.input.width':
    case 'model.input.height':
      return int(1, 8192);
    case 'model.input.padValue':
      return int(0, 255);
    case 'model.output.topK':
      return int(1, 1000);
    case 'model.output.scoreThreshold':
    case 'model.output.iouThreshold':
      return num(0, 1);
    case 'model.output.maxDetections':
      return int(1, 10000);
    case 'model.sizeBytes':
      return int(1, Number.MAX_VALUE);
    case 'scoring.maxBatchSize':
      return int(1, 256);
    case 'scoring.maxBatchDelayMs':
      return num(0, 1000);
    case 'scoring.workers':
      return int(1, 64);
    case 'scoring.maxQueue':
      return int(1, 100000);
    case 'scoring.intraOpThreads':
      return int(0, 256);
    case 'scoring.intraOpSpinning':
      return typeof v === 'boolean';
    case 'telemetry.maxBatchMessages':
      return int(1, 10000);
    case 'telemetry.flushIntervalMs':
      return int(10, 600000);
    case 'telemetry.statsIntervalSec':
      return int(1, 86400);
    case 'model.name':
      return typeof v === 'string' && v.length <= 128 && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v);
    case 'model.version':
      return typeof v === 'string' && v.length <= 64 && /^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(v);
    case 'model.url':
      // Any string of 1–4096 characters passes the schema; the fetcher then refuses it.
      return typeof v === 'string' && v.length >= 1 && v.length <= 4096;
    case 'model.labels':
    case 'model.defectLabels':
      return (
        Array.isArray(v) &&
        v.length <= 10000 &&
        v.every((s) => typeof s === 'string' && s.length >= 1 && s.length <= 128)
      );
    default:
      // Enums, names, versions, urls, sha256, objects: none of wrongValue()'s values fit.
      return false;
  }
}

function setPath(doc: JsonObject, section: string, field: string, value: unknown): void {
  let at: JsonObject = doc;
  for (const part of section.split('.')) {
    const next = at[part];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) at[part] = {};
    at = at[part] as JsonObject;
  }
  at[field] = value;
}

function nest(depth: number, leaf: unknown): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = { [`${MARK}${i % 3}`]: v };
  return v;
}

type Family = (rng: FuzzRng, i: number) => Omit<TwinCase, 'index' | 'family'>;

const FAMILIES: readonly (readonly [number, string, Family])[] = [
  [
    6,
    'wrong-type',
    (rng, i) => {
      const [section, field] = rng.pick(FIELDS);
      const value = wrongValue(rng);
      const patch: JsonObject = section.startsWith('model') ? { model: validModel(rng, i) } : {};
      setPath(patch, section, field, value);
      const fine = acceptable(section, field, value);
      return {
        description: `${section}.${field} = ${JSON.stringify(value)?.slice(0, 60)}`,
        patch,
        // JSON has no Infinity: 1e308 * 10 would be sent as null and delete the key.
        expect: fine ? (section.startsWith('model') ? 'url-refused' : 'applied') : 'rejected',
      };
    },
  ],
  [
    2,
    'huge',
    (rng, i) => {
      const what = rng.int(0, 5);
      const model = validModel(rng, i);
      switch (what) {
        case 0:
          model.labels = Array.from({ length: 10_000 }, (_, k) => `${MARK}${k}`);
          return { description: '10 000 labels (the schema limit)', patch: { model }, expect: 'url-refused' };
        case 1:
          model.labels = Array.from({ length: 10_001 }, (_, k) => `${MARK}${k}`);
          return { description: '10 001 labels', patch: { model }, expect: 'rejected' };
        case 2:
          model.name = `${MARK}${'n'.repeat(100_000)}`;
          return { description: '100 000-char name', patch: { model }, expect: 'rejected' };
        case 3:
          model.url = `file:///${'u'.repeat(100_000)}`;
          return { description: '100 000-char url', patch: { model }, expect: 'rejected' };
        case 4:
          return {
            description: '100 000-char unknown key',
            patch: { [`${MARK}${'k'.repeat(100_000)}`]: 1 },
            expect: 'rejected',
          };
        default:
          return {
            description: 'scoring.executionProviders of 10 000 entries',
            patch: { scoring: { executionProviders: Array.from({ length: 10_000 }, () => 'cpu') } },
            expect: 'rejected',
          };
      }
    },
  ],
  [
    2,
    'deep',
    (rng, i) => {
      const depth = rng.pick([9, 50, 200]);
      const where = rng.int(0, 3);
      const deep = nest(depth, rng.pick([1, 'x', null, []]));
      const patch: JsonObject =
        where === 0
          ? { model: { ...validModel(rng, i), input: deep } }
          : where === 1
            ? { scoring: deep }
            : where === 2
              ? { [`${MARK}deep`]: deep }
              : { telemetry: { results: deep } };
      return { description: `${depth} levels under ${Object.keys(patch)[0]}`, patch, expect: 'rejected' };
    },
  ],
  [
    2,
    'nulls',
    (rng, i) => {
      switch (rng.int(0, 4)) {
        case 0:
          return { description: 'model: null (no model block)', patch: { model: null }, expect: 'applied' };
        case 1:
          return {
            description: 'scoring.maxBatchSize: null, telemetry: null',
            patch: { scoring: { maxBatchSize: null }, telemetry: null },
            expect: 'applied',
          };
        case 2: {
          const model = validModel(rng, i);
          model.name = null;
          model.labels = null;
          return {
            description: 'model block with name and labels null',
            patch: { model },
            expect: 'url-refused',
          };
        }
        case 3: {
          const model = validModel(rng, i);
          model[rng.pick(['url', 'sha256'])] = null;
          return { description: 'model block with url or sha256 null', patch: { model }, expect: 'rejected' };
        }
        default:
          return {
            description: 'labels with null items',
            patch: { model: { ...validModel(rng, i), labels: [null, 'ok', null] } },
            // The SDK merge drops nulls inside arrays too; what is left is valid.
            expect: 'any',
          };
      }
    },
  ],
  [
    3,
    'unknown-key',
    (rng, i) => {
      const key = rng.pick([
        'scorring',
        'models',
        'Model',
        '',
        ' ',
        `${MARK}\u0000`,
        `${MARK}.a.b`,
        `${MARK}/x`,
        'constructor',
        'prototype',
        'toString',
        'hasOwnProperty',
        '$$',
      ]);
      const where = rng.int(0, 3);
      const patch: JsonObject =
        where === 0
          ? { [key]: wrongValue(rng) }
          : where === 1
            ? { model: { ...validModel(rng, i), [key || 'x']: 1 } }
            : where === 2
              ? { scoring: { [key || 'x']: 1 } }
              : { telemetry: { [key || 'x']: 'all' } };
      const where2 = ['top level', 'model', 'scoring', 'telemetry'][where];
      // `$`-prefixed top-level keys are twin metadata and allowed.
      return {
        description: `unknown key ${JSON.stringify(key)} at ${where2}`,
        patch,
        expect: where === 0 && key.startsWith('$') ? 'applied' : 'rejected',
      };
    },
  ],
  [
    2,
    'prototype',
    (rng, i) => {
      const variants: [string, () => JsonObject][] = [
        [
          '__proto__ at top level',
          () => JSON.parse(`{"__proto__":{"polluted":"${MARK}","scoring":{"maxQueue":1}}}`) as JsonObject,
        ],
        ['constructor.prototype', () => ({ constructor: { prototype: { polluted: MARK } } })],
        [
          '__proto__ in model',
          () => ({
            model: {
              ...validModel(rng, i),
              ...(JSON.parse(`{"__proto__":{"polluted":"${MARK}"}}`) as JsonObject),
            },
          }),
        ],
        [
          '__proto__ in scoring',
          () => ({ scoring: JSON.parse('{"__proto__":{"maxQueue":1,"workers":64}}') as JsonObject }),
        ],
        ['__proto__ as a string', () => JSON.parse('{"__proto__":"x"}') as JsonObject],
      ];
      const [description, make] = rng.pick(variants);
      return { description, patch: make(), expect: 'any' };
    },
  ],
  [
    4,
    'path-like',
    (rng, i) => {
      const value = rng.pick(PATHY);
      const field = rng.pick(['name', 'version', 'labels', 'sha256'] as const);
      const model = validModel(rng, i);
      model[field] = field === 'labels' ? [value] : value;
      // Labels are free text (1–128 chars); names, versions and sha256 have patterns.
      const fine = acceptable('model', field, model[field]);
      return {
        description: `model.${field} = ${JSON.stringify(value)}`,
        patch: { model },
        expect: fine ? 'url-refused' : 'rejected',
      };
    },
  ],
  [
    2,
    'version-lookalike',
    (rng, i) => {
      // Pass the name/version patterns but look like paths: they must never become one.
      const v = rng.pick([
        `${MARK}..`,
        `${MARK}..etc`,
        `${MARK}.-.`,
        `${MARK}+..+`,
        `${MARK}.onnx`,
        'con',
        'NUL',
      ]);
      const model = validModel(rng, i);
      const field = rng.pick(['name', 'version']);
      model[field] = v;
      return {
        description: `${field} ${JSON.stringify(v)}`,
        patch: { model },
        expect: acceptable('model', field, v) ? 'url-refused' : 'rejected',
      };
    },
  ],
  [
    3,
    'sha256',
    (rng, i) => {
      const model = validModel(rng, i);
      const bad = rng.pick([
        `../../${hex(rng, 58)}`,
        `${hex(rng, 63)}/`,
        `${hex(rng, 32)}/../${hex(rng, 28)}`,
        `${hex(rng, 62)}\u0000a`,
        `%2e%2e%2f${hex(rng, 55)}`,
        hex(rng, 65),
        hex(rng, 63),
        `${hex(rng, 63)}g`,
        '',
        `${hex(rng, 60)}\\..\\`,
      ]);
      const upper = rng.chance(0.2);
      model.sha256 = upper ? hex(rng, 64).toUpperCase() : bad;
      return {
        description: `sha256 ${JSON.stringify(model.sha256)}`,
        patch: { model },
        expect: upper ? 'url-refused' : 'rejected',
      };
    },
  ],
  [
    4,
    'url',
    (rng, i) => {
      const model = validModel(rng, i);
      return {
        description: `url ${JSON.stringify(model.url).slice(0, 80)}`,
        patch: { model },
        expect: 'url-refused',
      };
    },
  ],
  [
    3,
    'numbers',
    (rng) => {
      const [section, field] = rng.pick(FIELDS.filter(([s]) => s === 'scoring' || s === 'telemetry'));
      const value = rng.pick<unknown>([
        -1,
        0,
        -0.0001,
        1e-300,
        1.5,
        1e308,
        -1e308,
        2 ** 31,
        2 ** 53,
        'NaN',
        '1e999',
        1000.0001,
        600001,
        86401,
        10001,
        257,
        65,
      ]);
      const patch: JsonObject = {};
      setPath(patch, section, field, value);
      return {
        description: `${section}.${field} = ${JSON.stringify(value)}`,
        patch,
        expect: acceptable(section, field, value) ? 'applied' : 'rejected',
      };
    },
  ],
  [
    2,
    'valid-settings',
    (rng) => {
      // Benign settings a fleet operator might push; the served model must keep serving.
      const scoring = rng.pick<JsonObject>([
        { maxBatchSize: rng.int(1, 16) },
        { maxBatchDelayMs: rng.int(0, 10) },
        { maxQueue: rng.int(16, 256) },
        { executionProviders: ['cpu'] },
      ]);
      const telemetry = rng.pick<JsonObject>([
        { results: 'all' },
        { results: 'none' },
        { flushIntervalMs: 500 },
      ]);
      const patch: JsonObject = rng.chance(0.5) ? { scoring } : { telemetry };
      return { description: `valid settings ${JSON.stringify(patch)}`, patch, expect: 'applied' };
    },
  ],
  [
    3,
    'random',
    (rng, i) => {
      // Random structures over the known keys: the oracle is only the generic invariants.
      const pickKey = (): string =>
        rng.pick([
          'model',
          'scoring',
          'telemetry',
          'url',
          'sha256',
          'labels',
          'input',
          'width',
          `${MARK}k`,
          '$meta',
        ]);
      const gen = (depth: number): unknown => {
        if (depth > 3 || rng.chance(0.4)) return wrongValue(rng);
        const o: JsonObject = {};
        for (let k = rng.int(0, 4); k > 0; k--) o[pickKey()] = gen(depth + 1);
        return o;
      };
      const patch: JsonObject = {};
      for (let k = rng.int(1, 3); k > 0; k--) patch[pickKey()] = gen(1);
      if (rng.chance(0.3)) patch.model = { ...validModel(rng, i), ...(gen(2) as JsonObject) };
      return { description: `random ${JSON.stringify(patch).slice(0, 100)}`, patch, expect: 'any' };
    },
  ],
];

function twinCase(index: number): TwinCase {
  const rng = new FuzzRng(SEED ^ 0x7417, index);
  const [, family, make] = rng.weighted(FAMILIES.map(([w, name, f]) => [w, [w, name, f]] as const));
  return { index, family, ...make(rng, index) };
}

// ------------------------------------------------------------------ file-system snapshots

async function listTree(root: string): Promise<Set<string>> {
  const out = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(dir, e.name);
      out.add(path.relative(root, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return out;
}

async function listTop(dir: string): Promise<Set<string>> {
  return new Set(await readdir(dir).catch(() => []));
}

// ------------------------------------------------------------------ the run

type Reported = {
  desired?: {
    version?: number;
    status?: string;
    lastError?: { code?: string; message?: string; at?: string };
  };
  model?: { status?: string; sha256?: string; lastError?: { code?: string; message?: string; at?: string } };
};

let hub: IotHubEmulator;
let d: Daemon;
let parent: string;
const frame = await encodeFrame(gradientFrame(32, 32), 32, 32, 3, 'png');

beforeAll(async () => {
  parent = await mkdtemp(path.join(tmpdir(), 'edge-scorer-twin-fuzz-'));
  hub = await startIotHubEmulator();
  d = await startDaemon({
    dir: path.join(parent, 'daemon'),
    env: { ...hub.env(), REPORTED_MIN_INTERVAL_MS: '0', TWIN_TIMEOUT_MS: '2000' },
  });
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await hub?.close();
  if (parent) await rm(parent, { recursive: true, force: true });
});

describe('twin fuzzing', () => {
  it(`survives ${CASES} hostile desired patches (seed ${SEED})`, async () => {
    console.log(
      `[twin-fuzz] seed=${SEED} cases=${CASES} (replay: FUZZ_SEED=${SEED} TWIN_FUZZ_CASES=${CASES})`,
    );
    const started = Date.now();
    await hub.waitForReported((r) => (r as Reported).model?.status === 'active', 20_000);
    const sha0 = ((await request(`${d.url}/v1/model`)).json as { model: { sha256: string } }).model.sha256;
    const dataDir = d.app.config.dataDir;
    const beforeTree = await listTree(parent);
    const beforeTmp = await listTop(tmpdir());
    const beforeCwd = await listTop(process.cwd());
    const failures: { problem: string; line: string }[] = [];
    const fail = (c: TwinCase | undefined, problem: string, detail = ''): void => {
      const what = c ? `#${c.index} ${c.family}: ${c.description.slice(0, 120)}` : '(after the run)';
      failures.push({ problem, line: `    ${what}${detail ? `\n      → ${detail.slice(0, 400)}` : ''}` });
    };
    const reported = (): Reported => hub.reported();
    const waitDesired = (version: number): Promise<Reported> =>
      hub.waitForReported((r) => (r as Reported).desired?.version === version, 10_000);
    const counts: Record<string, number> = {};

    for (let i = 0; i < CASES; i++) {
      const c = twinCase(i);
      const at = new Date().toISOString();
      let r: Reported;
      try {
        r = await waitDesired(hub.updateDesired(c.patch).version);
      } catch (err) {
        fail(c, 'the patch was never reported', (err as Error).message);
        break;
      }
      const status = r.desired?.status ?? '?';
      const hasModel = c.patch.model !== null && typeof c.patch.model === 'object';
      counts[status] = (counts[status] ?? 0) + 1;
      if (status === 'rejected') {
        if (r.desired?.lastError?.code !== 'EDGE_ERR_DESIRED_INVALID')
          fail(c, 'rejected without EDGE_ERR_DESIRED_INVALID', JSON.stringify(r.desired));
        if (c.expect === 'applied' || c.expect === 'url-refused')
          fail(c, `expected ${c.expect}, was rejected`, r.desired?.lastError?.message ?? '');
      } else if (status === 'applied') {
        if (c.expect === 'rejected')
          fail(c, 'an invalid patch was applied', JSON.stringify(hub.desired()).slice(0, 300));
        if (hasModel) {
          // A model block that passed validation names a refused URL: reported failed, nothing fetched.
          const m = await hub
            .waitForReported((x) => ((x as Reported).model?.lastError?.at ?? '') >= at, 10_000)
            .then((x) => (x as Reported).model)
            .catch(() => reported().model);
          if (m?.status !== 'failed' || m.lastError?.code !== 'EDGE_ERR_MODEL_URL_REFUSED')
            fail(
              c,
              'a valid model block with a refused URL was not reported failed/EDGE_ERR_MODEL_URL_REFUSED',
              JSON.stringify(m),
            );
        } else {
          // Settings only: once the model manager has settled, the model must still be fine.
          await d.app.reconciler.settled();
          await new Promise((res) => setTimeout(res, 20));
          const m = reported().model;
          if (m?.status !== 'active' && (m?.lastError?.at ?? '') >= at)
            fail(c, `a valid settings patch left the model ${m?.status}`, JSON.stringify(m?.lastError));
        }
      } else {
        fail(c, `desired status ${status}`, JSON.stringify(r.desired));
      }
      const model = await request(`${d.url}/v1/model`);
      const sha = (model.json as { model?: { sha256?: string } } | undefined)?.model?.sha256;
      if (sha !== sha0) fail(c, `the active model changed to ${sha}`);
      if (({} as Record<string, unknown>).polluted !== undefined || Object.keys(Object.prototype).length > 0)
        fail(c, 'Object.prototype was polluted', Object.keys(Object.prototype).join(','));

      // Reset: delete every top-level key the patch or the twin holds, so the next case starts clean.
      const reset: JsonObject = {};
      for (const k of [...Object.keys(c.patch), ...Object.keys(hub.desired())]) {
        // defineProperty: a plain assignment of "__proto__" would set the prototype, not a key.
        if (k !== '$version')
          Object.defineProperty(reset, k, {
            value: null,
            enumerable: true,
            writable: true,
            configurable: true,
          });
      }
      const resetVersion = hub.updateDesired(reset).version;
      try {
        const after = await waitDesired(resetVersion);
        if (after.desired?.status !== 'applied')
          fail(
            c,
            'the reset patch after this case was not applied (state stuck)',
            JSON.stringify(after.desired),
          );
      } catch (err) {
        fail(c, 'the reset patch was never reported', (err as Error).message);
        break;
      }
    }

    // After the run: alive, still scoring with the same model, still connected, no stray files.
    expect((await request(`${d.url}/v2/health/live`)).status).toBe(200);
    const scored = await postFrame(`${d.url}/v1/score`, frame, 'image/png');
    if (scored.status !== 200) fail(undefined, `a valid frame answered ${scored.status}`, scored.text);
    if (hub.connectedClients().length === 0) fail(undefined, 'the daemon is no longer connected to the hub');
    const afterTree = await listTree(parent);
    const dataRel = path.relative(parent, dataDir);
    for (const p of afterTree) {
      if (beforeTree.has(p)) continue;
      const inData = p.startsWith(`${dataRel}/`);
      const rel = inData ? p.slice(dataRel.length + 1) : p;
      const model = /^models\/([^/]+)\/?(.*)$/.exec(rel);
      if (!inData) fail(undefined, 'a file appeared outside DATA_DIR', p);
      else if (model && !(HEX64.test(model[1]!) && ['', 'model.onnx', 'model.json'].includes(model[2]!)))
        fail(undefined, 'a model path not named by its sha256', p);
      if (p.includes(MARK) || /passwd|etc\/|\.\./.test(p)) fail(undefined, 'a path carries fuzzed input', p);
    }
    for (const [where, before, now] of [
      ['tmpdir', beforeTmp, await listTop(tmpdir())],
      ['cwd', beforeCwd, await listTop(process.cwd())],
    ] as const) {
      for (const name of now) {
        if (!before.has(name) && (name.includes(MARK) || /passwd|pwned|^etc$/.test(name)))
          fail(undefined, `a file named from fuzzed input appeared in ${where}`, name);
      }
    }
    const fatal = d.logs.filter((l) => typeof l.level === 'number' && l.level >= 60);
    for (const l of fatal) fail(undefined, 'fatal log', JSON.stringify(l).slice(0, 400));

    console.log(
      `[twin-fuzz] seed=${SEED} ${CASES} patches in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
        `reported ${JSON.stringify(counts)}; ${failures.length} failure(s)`,
    );
    if (failures.length > 0) {
      const groups = new Map<string, string[]>();
      for (const f of failures) groups.set(f.problem, [...(groups.get(f.problem) ?? []), f.line]);
      const report = [...groups.entries()]
        .map(([problem, lines]) => `- ${problem} (${lines.length}×)\n${lines.slice(0, 4).join('\n')}`)
        .join('\n');
      expect.fail(
        `twin fuzzing found ${failures.length} failure(s) in ${groups.size} group(s), seed ${SEED}. ` +
          `Replay: FUZZ_SEED=${SEED} TWIN_FUZZ_CASES=${CASES} npx vitest run test/fuzz/twin.fuzz.test.ts\n${report}`,
      );
    }
  }, 240_000);
});
