import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { layeredDeployment, type LayeredDeployment } from '../../src/cli/rollout.js';
import type { DesiredModel } from '../../src/models/published-model.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame } from '../helpers/frames.js';
import { postFrame } from '../helpers/http.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { matches, pathsOf, valueAt, type ModuleTwin } from '../helpers/twin-query.js';

let server: ModelServer | undefined;
let daemon: Daemon | undefined;
let desiredFile: string | undefined;

afterEach(async () => {
  await daemon?.stop();
  await server?.close();
  if (desiredFile) await rm(desiredFile, { force: true });
});

const RING = { module: 'edge-scorer', targetCondition: "tags.ring='canary'", priority: 20 };

/**
 * The metrics of `edge-scorer rollout` are queries over the module twin. Each one is evaluated here
 * against the desired document a deployment would set and the reported document a real daemon
 * writes: every path a query reads is one the daemon writes, and each query counts the device
 * exactly when it should.
 */
it('every metrics query reads reported paths the daemon writes, and counts the device when it should', async () => {
  server = await startModelServer();
  const v7 = desiredModel(server, versionedModel('7')) as unknown as DesiredModel;
  const v8 = desiredModel(server, versionedModel('8')) as unknown as DesiredModel;
  const trial = layeredDeployment(v8, {
    ...RING,
    candidate: { sampleRate: 1 },
    agreementBar: 0.98,
    minFrames: 5,
  });
  const model7 = layeredDeployment(v7, { ...RING, agreementBar: 0.98, minFrames: 5 });
  const model8 = layeredDeployment(v8, { ...RING, agreementBar: 0.98, minFrames: 5 });

  // The module's desired properties as IoT Hub merges them: the deployments' blocks by path.
  const desiredOf = (...deployments: LayeredDeployment[]): Record<string, unknown> => {
    const desired: Record<string, unknown> = {};
    for (const d of deployments) {
      for (const [key, value] of Object.entries(d.content.modulesContent['edge-scorer']!)) {
        desired[key.replace(/^properties\.desired\./, '')] = value;
      }
    }
    return desired;
  };
  let desired = desiredOf(model7, trial);
  desiredFile = path.join(tmpdir(), `edge-scorer-rollout-${process.pid}-${Date.now()}.json`);
  await writeFile(desiredFile, JSON.stringify(desired));
  const d = (daemon = await startDaemon({
    env: {
      DESIRED_PROPERTIES_FILE: desiredFile,
      DESIRED_PROPERTIES_POLL_MS: '50',
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      REPORTED_MIN_INTERVAL_MS: '50',
      WARMUP_RUNS: '1',
    },
  }));
  const twin = (): ModuleTwin => ({ moduleId: 'edge-scorer', desired, reported: d.app.reported.document });
  await waitFor(() => (d.app.manager.status.version === '7' ? true : undefined), 'model 7 active', 30_000);
  await waitFor(
    () => (d.app.shadow.report?.status === 'active' ? true : undefined),
    'candidate active',
    30_000,
  );
  const frame = await encodeFrame(gradientFrame(64, 48), 64, 48, 3, 'png');
  for (let i = 0; i < 6; i++) {
    expect((await postFrame(`${d.url}/v1/score`, frame, 'image/png')).status).toBe(200);
    await d.app.engine.frames.idle();
    await d.app.shadow.idle();
  }
  await waitFor(
    () => ((twin().reported.candidate as { frames?: number }).frames === 6 ? true : undefined),
    'reported',
  );

  // Every path every query reads exists in the twin the daemon and the deployment produce.
  for (const dep of [trial, model7, model8]) {
    for (const query of Object.values(dep.metrics.queries)) {
      for (const p of pathsOf(query))
        expect({ query, p, v: valueAt(twin(), p) }).not.toMatchObject({ v: undefined });
    }
  }
  const counted = (dep: LayeredDeployment): string[] =>
    Object.entries(dep.metrics.queries)
      .filter(([, q]) => matches(q, twin()))
      .map(([name]) => name);
  // v7 serves; the v8 trial runs and (the two versions compute the same) agrees on every frame.
  expect(counted(model7)).toEqual(['active']);
  expect(counted(trial)).toEqual(['candidateActive']);
  // A bar above perfect agreement counts the device as below it.
  const strict = layeredDeployment(v8, {
    ...RING,
    candidate: { sampleRate: 1 },
    agreementBar: 1.01,
    minFrames: 5,
  });
  expect(counted(strict)).toEqual(['candidateActive', 'agreementBelowBar']);

  // Promotion: v8 serves, the trial has ended.
  expect((await d.app.methods.promote!({})).status).toBe(200);
  await waitFor(
    () => ((twin().reported.candidate as { status?: string }).status === 'promoted' ? true : undefined),
    'promoted',
  );
  expect(counted(trial)).toEqual(['promoted']);

  // Widening: the ring's model deployment names v8; while it is pending, then once active.
  desired = desiredOf(model8);
  expect(counted(model8)).toEqual(['active']);
  expect(counted(model7)).toEqual([]);

  // A ring whose model fails to load counts as failed, while the old model keeps serving.
  const broken = { ...v8, version: '9', sha256: 'ab'.repeat(32) };
  const model9 = layeredDeployment(broken, { ...RING, agreementBar: 0.98, minFrames: 5 });
  desired = desiredOf(model9);
  await writeFile(desiredFile, JSON.stringify(desired));
  await waitFor(
    () => (d.app.manager.status.status === 'failed' ? true : undefined),
    'model 9 failed',
    30_000,
  );
  await waitFor(
    () => ((twin().reported.model as { status?: string }).status === 'failed' ? true : undefined),
    'reported failed',
  );
  expect(counted(model9)).toEqual(['failed']);
  expect(counted(model8)).toEqual([]);
}, 120_000);
