import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ScoringEngine, type ScoredFrame } from '../../src/scoring/engine.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { startDaemon, testConfig, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { metricValue, postFrame, scrape } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';
import { buildClassifier, writeModelDir } from '../helpers/onnx-builder.js';

/**
 * What happens after a frame is scored is a stream the engine publishes (docs/architecture.md,
 * "The path of a frame"); the engine hosts one runtime per role. Real fastify on loopback, real
 * onnxruntime in worker threads, real sharp.
 */

let daemon: Daemon | undefined;
let dir: string | undefined;

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const frames = await Promise.all(
  [20, 128, 240].map((v) => encodeFrame(solidFrame(32, 32, 3, v), 32, 32, 3, 'png')),
);

interface Posted {
  frameId: string;
  ms: number;
  /** The answer without its ids and timings: what the model said. */
  said: string;
}

async function post(url: string, frameId: string, body: Uint8Array): Promise<Posted> {
  const started = performance.now();
  const r = await postFrame(`${url}/v1/score`, body, 'image/png', { 'x-frame-id': frameId });
  const ms = performance.now() - started;
  expect(r.status).toBe(200);
  const { frameId: id, timing: _t, ...said } = r.json as { frameId: string; timing: unknown };
  expect(id).toBe(frameId);
  return { frameId, ms, said: JSON.stringify(said) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

describe('the scored-frame stream', () => {
  it('two subscribers receive the same frames in order; one that throws or stalls changes no answer and delays none', async () => {
    daemon = await startDaemon();
    const { engine } = daemon.app;
    const seenA: ScoredFrame[] = [];
    const seenB: string[] = [];
    engine.frames.subscribe('a', (f) => void seenA.push(f));
    engine.frames.subscribe('b', async (f) => {
      await new Promise((r) => setTimeout(r, 1)); // an async subscriber at its own pace
      seenB.push(f.frameId);
    });

    const quiet: Posted[] = [];
    const noisy: Posted[] = [];
    const posted: string[] = [];
    let unsubscribe: (() => void)[] = [];
    // Rounds alternate without and with the bad subscribers, so drift on the machine hits both.
    for (let round = 0; round < 6; round++) {
      const bad = round % 2 === 1;
      if (bad) {
        unsubscribe = [
          engine.frames.subscribe('throws', () => {
            throw new Error('a broken subscriber');
          }),
          engine.frames.subscribe('stalls', () => new Promise<void>(() => undefined), { maxPending: 4 }),
        ];
      }
      for (let i = 0; i < 12; i++) {
        const frameId = `r${round}-f${i}`;
        posted.push(frameId);
        (bad ? noisy : quiet).push(await post(daemon.url, frameId, frames[i % 3]!));
      }
      for (const u of unsubscribe.splice(0)) u();
    }

    await waitFor(async () => (seenB.length === posted.length ? true : undefined), 'subscriber b caught up');
    expect(seenA.map((f) => f.frameId)).toEqual(posted);
    expect(seenB).toEqual(posted);
    // What a subscriber gets: the frame bytes as posted, ids, the model that answered, the prediction.
    const first = seenA[0]!;
    expect(Buffer.compare(first.frame.body, Buffer.from(frames[0]!))).toBe(0);
    expect(first).toMatchObject({
      frameId: 'r0-f0',
      cameraId: null,
      role: 'active',
      model: {
        name: 'test-classifier',
        version: '1',
        sha256: expect.stringMatching(/^[0-9a-f]{64}$/) as string,
      },
      task: 'classification',
      frame: { mediaType: 'image/png' },
    });
    expect(first.timing.totalMs).toBeGreaterThan(0);

    // The same frame gets the same answer with or without the bad subscribers.
    const said = (p: Posted[], k: number): Set<string> =>
      new Set(p.filter((_, i) => (i % 12) % 3 === k).map((x) => x.said));
    for (let k = 0; k < 3; k++) {
      expect(said(quiet, k).size).toBe(1);
      expect(said(noisy, k)).toEqual(said(quiet, k));
    }
    // No delay beyond noise: the bad subscribers run after the answer, never on its path.
    const q = median(quiet.map((p) => p.ms));
    const n = median(noisy.map((p) => p.ms));
    expect(n).toBeLessThan(q * 1.5 + 5);

    const samples = await scrape(daemon.url);
    expect(metricValue(samples, 'edge_scorer_frame_stream_failures_total', { subscriber: 'throws' })).toBe(
      36,
    );
    // Each stalled round: the first frame sits in the handler forever, 4 wait, the rest are dropped.
    expect(metricValue(samples, 'edge_scorer_frame_stream_dropped_total', { subscriber: 'stalls' })).toBe(
      3 * (12 - 1 - 4),
    );
    expect(metricValue(samples, 'edge_scorer_frame_stream_dropped_total', { subscriber: 'a' })).toBe(0);
  });
});

describe('runtimes by role', () => {
  it('two runtimes of different models, loaded at once, score independently and release their sessions on stop', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-roles-'));
    const a = await writeModelDir(
      path.join(dir, 'a'),
      buildClassifier({ batch: 'dynamic', channels: 3, height: 32, width: 32, classes: 3, output: 'logits' }),
      { name: 'model-a', version: '1', labels: ['ok', 'bridge', 'missing'], defectLabels: ['bridge'] },
    );
    const b = await writeModelDir(
      path.join(dir, 'b'),
      buildClassifier({ batch: 'dynamic', channels: 1, height: 16, width: 16, classes: 2 }),
      {
        name: 'model-b',
        version: '9',
        labels: ['good', 'bad'],
        defectLabels: ['bad'],
        input: { color: 'gray' },
      },
    );
    const config = testConfig(dir, a.modelPath);
    const metrics = new Metrics({ defaultMetrics: false });
    const engine = new ScoringEngine(config, pino({ level: 'silent' }), metrics);
    const published: string[] = [];
    engine.frames.subscribe('test', (f) => void published.push(`${f.role}:${f.model.name}`));
    try {
      const [infoA, infoB] = await Promise.all([
        engine.activate({ modelPath: a.modelPath }),
        engine.activate({ modelPath: b.modelPath, role: 'candidate' }),
      ]);
      expect(infoA.manifest.name).toBe('model-a');
      expect(infoB.manifest.name).toBe('model-b');
      expect(engine.modelOf('active')?.manifest.name).toBe('model-a');
      expect(engine.modelOf('candidate')?.manifest.name).toBe('model-b');

      const input = { body: Buffer.from(frames[1]!), mediaType: 'image/png' as const };
      const outcomes = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          i % 2 === 0
            ? engine.score(input, { frameId: `f${i}`, cameraId: 'cam' })
            : engine.scoreAs('candidate', input),
        ),
      );
      outcomes.forEach((o, i) => {
        const active = i % 2 === 0;
        expect(o.model.name).toBe(active ? 'model-a' : 'model-b');
        const labels = o.prediction.classification!.map((c) => c.label).sort();
        expect(labels).toEqual(active ? ['bridge', 'missing', 'ok'] : ['bad', 'good']);
      });
      // Only the frames that answer the line are published; the candidate's are not.
      await engine.frames.idle();
      expect(published).toEqual(Array.from({ length: 6 }, () => 'active:model-a'));

      const text = await metrics.registry.metrics();
      expect(text).toMatch(/^edge_scorer_runtime_workers\{role="active"\} 1$/m);
      expect(text).toMatch(/^edge_scorer_runtime_workers\{role="candidate"\} 1$/m);
      expect(text).toMatch(/^edge_scorer_runtime_frames_total\{role="candidate"\} 6$/m);
      expect(text).toMatch(/^edge_scorer_runtime_frames_total\{role="active"\} 6$/m);
      expect(text).toMatch(/^edge_scorer_runtime_threads\{role="candidate"\} 1$/m);
    } finally {
      const runtimes = [engine.runtimeOf('active'), engine.runtimeOf('candidate')];
      await engine.stop();
      for (const r of runtimes) expect(r?.openWorkers).toBe(0);
    }
    const text = await metrics.registry.metrics();
    expect(text).not.toMatch(/^edge_scorer_runtime_workers\{/m);
  });
});
