import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { MAIN, freePort, spawnDaemon, killIfRunning, type ChildDaemon } from '../helpers/child-daemon.js';

/**
 * The published package is complete: `npm pack`, install the tarball with production dependencies
 * only in an empty directory (dependencies come from the npm registry), start the installed
 * daemon and score the bundled demo frame. A missing runtime dependency, a file left out of
 * `files` or a devDependency imported at run time fails here.
 */

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let dir: string | undefined;
let child: ChildDaemon | undefined;

afterEach(async () => {
  await killIfRunning(child);
  child = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

it('the packed tarball installs with production dependencies and scores the demo frame', async () => {
  // `npm test` builds first. Packing with --ignore-scripts keeps `prepare` from recompiling dist/
  // while other test files run the built daemon from it.
  expect(existsSync(MAIN), 'dist/main.js is missing: run npm run build').toBe(true);
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-pack-'));
  // onnxruntime-node's postinstall would download the CUDA provider from NuGet on linux/x64; the
  // tarball carries no .npmrc, so the installer says "skip" (docs/deployment.md).
  const env = {
    ...process.env,
    npm_config_onnxruntime_node_install: 'skip',
    ONNXRUNTIME_NODE_INSTALL: 'skip',
    npm_config_update_notifier: 'false',
  };
  await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: ROOT, env });
  const tarballs = (await readdir(dir)).filter((f) => f.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  const tarball = path.join(dir, tarballs[0]!);

  const app = path.join(dir, 'app');
  await mkdir(app);
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'pack-check', private: true }));
  await run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', tarball], {
    cwd: app,
    env,
    timeout: 240_000,
  });
  const installed = path.join(app, 'node_modules', 'edge-scorer');
  // No development tooling came along.
  for (const dev of ['typescript', 'vitest', 'tsx', 'eslint']) {
    expect(existsSync(path.join(app, 'node_modules', dev)), `${dev} installed`).toBe(false);
  }

  const bin = path.join(installed, 'dist', 'main.js');
  child = await spawnDaemon(
    { DATA_DIR: path.join(dir, 'data'), EXECUTION_PROVIDERS: 'cpu' },
    await freePort(),
    bin,
  );
  const frame = await readFile(path.join(installed, 'models', 'default', 'demo', 'board-bridge.jpg'));
  const res = await fetch(`${child.url}/v1/score`, {
    method: 'POST',
    body: frame,
    headers: { 'content-type': 'image/jpeg', 'x-camera-id': 'line1-top' },
  });
  const body = (await res.json()) as {
    defect: boolean;
    cameraId: string;
    model: { name: string };
    detections: { label: string }[];
  };
  expect(res.status).toBe(200);
  expect(body).toMatchObject({
    defect: true,
    cameraId: 'line1-top',
    model: { name: 'aoi-solder-bridge-demo' },
  });
  expect(body.detections.length).toBeGreaterThan(0);
  expect(body.detections.every((d) => d.label === 'solder-bridge')).toBe(true);
}, 300_000);
