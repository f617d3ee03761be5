import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { modelBlock } from '../../src/cli/model-patch.js';
import { parseDesired } from '../../src/twin/desired.js';
import { defaultTestModel, startDaemon, type Daemon } from '../helpers/daemon.js';
import { boardFrame, rng } from '../helpers/frames.js';
import { metricValue, postFrame, scrape } from '../helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator, type JsonObject } from '../helpers/iothub-emulator.js';
import { waitFor } from '../helpers/lifecycle.js';
import { writeModelDir } from '../helpers/onnx-builder.js';

/**
 * Drift end to end (docs/drift.md): `model-patch --reference` profiles a folder of rendered boards
 * with the daemon's own engine; a daemon serving that model under the IoT Hub emulator measures
 * each camera's window against it, and a camera whose frames turn darker — only that camera —
 * shows in the metrics, `drift` events upstream, `stats` and reported `drift`. Darker frames are
 * not only darker: their contrast and sharpness fall with the gain, and the classifier's answers
 * change, so every feature of that camera may cross; luma must.
 */

let dir: string | undefined;
let hub: IotHubEmulator | undefined;
let daemon: Daemon | undefined;

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await hub?.close();
  hub = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const WINDOW = 100;

describe('drift', () => {
  it('a reference from model-patch; a darker camera drifts, the other does not, in metrics, events, stats and reported', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'edge-drift-'));
    const { model, manifest } = defaultTestModel();
    const { modelPath } = await writeModelDir(path.join(dir, 'model'), model, manifest);
    const frames = path.join(dir, 'reference');
    await mkdir(frames);
    const r = rng(11);
    for (let i = 0; i < 200; i++)
      await writeFile(path.join(frames, `board-${String(i).padStart(3, '0')}.jpg`), await boardFrame(r));

    const block = await modelBlock(modelPath, { url: 'https://models.example/m.onnx', reference: frames });
    const reference = block.reference!;
    expect(reference.frames).toBe(200);
    for (const h of Object.values(reference.features)) {
      expect(h.counts.reduce((a, b) => a + b, 0)).toBe(200);
      expect(h.counts).toHaveLength(h.edges.length - 1);
    }
    expect(Object.values(reference.labels).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    // The patch is one the daemon accepts.
    expect(parseDesired({ model: block }).model?.reference).toEqual(reference);

    hub = await startIotHubEmulator({
      desired: {
        drift: { windowFrames: WINDOW, psiThreshold: 0.25 },
        telemetry: { results: 'none', statsIntervalSec: 1, flushIntervalMs: 200 },
      },
    });
    const h = hub;
    daemon = await startDaemon({
      model,
      manifest: { ...manifest, reference },
      env: { ...h.env(), TWIN_TIMEOUT_MS: '2000' },
    });
    const d = daemon;
    await h.waitForReported((rep) => (rep.drift as JsonObject | undefined)?.state === 'warming', 20_000);

    const same = rng(12);
    const dark = rng(13);
    for (let i = 0; i < WINDOW + 10; i++) {
      for (const [camera, body] of [
        ['cam-a', await boardFrame(same)],
        ['cam-b', await boardFrame(dark, { gain: 0.6 })],
      ] as const) {
        const a = await postFrame(`${d.url}/v1/score`, body, 'image/jpeg', { 'x-camera-id': camera });
        expect(a.status).toBe(200);
      }
    }
    await d.app.engine.frames.idle();

    const reported = await h.waitForReported(
      (rep) => (rep.drift as JsonObject | undefined)?.state === 'drifted',
    );
    const report = reported.drift as {
      drifted: { feature: string; camera: string }[];
      worst: { camera: string };
    };
    expect(report).toMatchObject({
      state: 'drifted',
      model: { name: 'test-classifier', version: '1' },
      windowFrames: WINDOW,
      psiThreshold: 0.25,
      worst: { camera: 'cam-b' },
    });
    expect(report.drifted).toContainEqual({ feature: 'luma', camera: 'cam-b' });
    expect(report.drifted.filter((f) => f.camera !== 'cam-b')).toEqual([]);

    const s = await scrape(d.url);
    const psi = (feature: string, camera: string): number =>
      metricValue(s, 'edge_scorer_drift_psi', { feature, camera });
    const baseline = (feature: string, camera: string): number =>
      metricValue(s, 'edge_scorer_drift_psi_baseline', { feature, camera });
    expect(psi('luma', 'cam-b') - baseline('luma', 'cam-b')).toBeGreaterThan(0.25);
    for (const feature of ['luma', 'contrast', 'sharpness', 'topScore', 'labels'])
      expect(psi(feature, 'cam-a') - baseline(feature, 'cam-a'), `cam-a ${feature}`).toBeLessThanOrEqual(
        0.25,
      );
    // The baseline is what a window of 100 against a reference of 200 reads by chance: (B − 1)(1/200 + 1/100).
    const bins = reference.features.luma.counts.length;
    expect(baseline('luma', 'cam-a')).toBeCloseTo((bins - 1) * (1 / 200 + 1 / WINDOW), 3);
    expect(metricValue(s, 'edge_scorer_drift_frames_total', { outcome: 'measured' })).toBeGreaterThanOrEqual(
      2 * WINDOW,
    );

    // One event per feature that crossed, all of cam-b, luma among them.
    const events = await h.waitForMessages(
      (m) => m.output === 'events' && m.properties.event === 'drift',
      10_000,
      report.drifted.length,
    );
    const drift = events.map((m) => JSON.parse(m.body.toString('utf8')) as JsonObject);
    expect(drift.map((e) => `${String(e.camera)}/${String(e.feature)}`).sort()).toEqual(
      report.drifted.map((f) => `${f.camera}/${f.feature}`).sort(),
    );
    const luma = drift.find((e) => e.feature === 'luma')!;
    expect(luma).toMatchObject({
      event: 'drift',
      state: 'drifted',
      camera: 'cam-b',
      threshold: 0.25,
      window: WINDOW,
      model: { name: 'test-classifier', version: '1' },
    });
    expect((luma.psi as number) - (luma.baseline as number)).toBeGreaterThan(0.25);

    const stats = await waitFor(() => {
      const found = h
        .messages('stats')
        .map((m) => JSON.parse(m.body.toString('utf8')) as { drift?: { state: string; cameras: JsonObject } })
        .find((b) => b.drift?.state === 'drifted');
      return found;
    }, 'a stats snapshot with drift');
    expect(Object.keys(stats.drift!.cameras).sort()).toEqual(['cam-a', 'cam-b']);
  }, 120_000);
});
