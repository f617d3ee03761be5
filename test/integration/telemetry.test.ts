import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request, scrape, metricValue } from '../helpers/http.js';
import {
  startIotHubEmulator,
  type CapturedMessage,
  type IotHubEmulator,
} from '../helpers/iothub-emulator.js';
import { waitFor } from '../helpers/lifecycle.js';
import { anomalyMap, buildAnomalibModel } from '../helpers/model-families.js';
import { buildYoloV8Detector } from '../helpers/onnx-builder.js';

/**
 * Results, events and stats travel upstream through the real SDK to the IoT Hub emulator:
 * documented bodies and properties, bounded message size, and an exact account through outages
 * and restarts (produced = delivered + dropped + pending).
 */

let hub: IotHubEmulator;
const daemons: Daemon[] = [];
const frame = await encodeFrame(solidFrame(32, 32, 3, 230), 32, 32, 3, 'png');

beforeEach(async () => {
  hub = await startIotHubEmulator({
    desired: {
      telemetry: { results: 'all', flushIntervalMs: 200, maxBatchMessages: 50, statsIntervalSec: 1 },
    },
  });
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await hub.close();
});

async function start(
  env: Record<string, string> = {},
  opts: { dir?: string; model?: Uint8Array; manifest?: object } = {},
): Promise<Daemon> {
  const d = await startDaemon({
    env: { ...hub.env(), TWIN_TIMEOUT_MS: '2000', IOTHUB_BACKOFF_MAX_MS: '1000', ...env },
    ...opts,
  });
  daemons.push(d);
  return d;
}

interface ResultBody {
  results: {
    frameId: string;
    defect: boolean;
    model: { version: string };
    classification?: unknown[];
    detections?: unknown[];
  }[];
}

const resultsOf = (msgs: CapturedMessage[]): ResultBody['results'] =>
  msgs.flatMap((m) => (JSON.parse(m.body.toString('utf8')) as ResultBody).results);

/** Distinct frame ids delivered on the `results` output. */
const deliveredIds = (): Set<string> => new Set(resultsOf(hub.messages('results')).map((r) => r.frameId));

async function post(d: Daemon, frameId: string): Promise<void> {
  const r = await postFrame(`${d.url}/v1/score`, frame, 'image/png', { 'x-frame-id': frameId });
  expect(r.status).toBe(200);
}

async function connected(d: Daemon): Promise<void> {
  await waitFor(() => (d.app.connection?.state === 'connected' ? true : undefined), 'IoT Hub connection');
}

/** The exact account of the results output, read from /metrics. */
async function account(
  d: Daemon,
): Promise<{ produced: number; delivered: number; dropped: number; pending: number }> {
  const s = await scrape(d.url);
  const o = { output: 'results' };
  return {
    produced: metricValue(s, 'edge_scorer_telemetry_items_produced_total', o),
    delivered: metricValue(s, 'edge_scorer_telemetry_items_delivered_total', o),
    dropped: metricValue(s, 'edge_scorer_telemetry_items_dropped_total', o),
    pending: metricValue(s, 'edge_scorer_telemetry_buffer_items', o),
  };
}

describe('upstream telemetry', () => {
  it('results arrive batched with the documented body and routing properties; events announce the start', async () => {
    const d = await start();
    await connected(d);
    for (let i = 0; i < 12; i++) await post(d, `frame-${i}`);
    await waitFor(() => (deliveredIds().size === 12 ? true : undefined), '12 results delivered');
    const msgs = hub.messages('results');
    expect(msgs.length).toBeLessThan(12); // batched, not one message per frame
    for (const m of msgs) {
      expect(m.contentType).toBe('application/json');
      expect(m.contentEncoding).toBe('utf-8');
      expect(m.messageId).toMatch(/^[0-9a-f]{8}-results-\d+-\d+$/);
      expect(m.properties).toMatchObject({ type: 'results', modelVersion: '1' });
      expect(['true', 'false']).toContain(m.properties.defect);
      for (const r of resultsOf([m])) expect(String(r.defect)).toBe(m.properties.defect);
    }
    const first = resultsOf(msgs)[0]!;
    expect(first).toMatchObject({ model: { name: 'test-classifier', version: '1' } });
    expect(first.classification).toHaveLength(3);
    const events = hub.messages('events').map((m) => JSON.parse(m.body.toString()) as { event: string });
    expect(events.map((e) => e.event)).toContain('daemon-started');
    expect(hub.messages('events')[0]!.properties).toMatchObject({ type: 'events' });
  });

  it('no message exceeds 262,144 bytes, even with maximal detections', async () => {
    // 2000 non-overlapping boxes per frame; maxDetections lets all of them through.
    const predictions = Array.from({ length: 2000 }, (_, i) => ({
      cx: 8 + (i % 50) * 12,
      cy: 8 + Math.floor(i / 50) * 12,
      w: 6,
      h: 6,
      scores: [0.9, 0.1],
    }));
    const model = buildYoloV8Detector({ batch: 'dynamic', height: 640, width: 640, classes: 2, predictions });
    const manifest = {
      name: 'dense-detector',
      version: '3',
      task: 'detection',
      labels: ['bridge', 'missing'],
      defectLabels: ['bridge'],
      input: { width: 640, height: 640, resize: 'letterbox', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
      output: { format: 'yolov8', scoreThreshold: 0.5, iouThreshold: 0.45, maxDetections: 10000 },
    };
    const d = await start({}, { model, manifest });
    await connected(d);
    for (let i = 0; i < 6; i++) await post(d, `dense-${i}`);
    await waitFor(() => (deliveredIds().size === 6 ? true : undefined), 'dense results delivered', 30_000);
    const msgs = hub.messages('results');
    for (const m of msgs) expect(m.bytes + Buffer.byteLength(m.topic)).toBeLessThanOrEqual(262_144);
    expect(Math.max(...msgs.map((m) => m.bytes))).toBeGreaterThan(100_000); // they really were big
    const all = resultsOf(msgs);
    expect(all.every((r) => (r.detections?.length ?? 0) > 0)).toBe(true);
  });

  it("an anomaly model's results carry its score, threshold and regions upstream, never the map", async () => {
    const model = buildAnomalibModel({
      score: 0.73,
      map: anomalyMap([
        [1, 1, 0.8],
        [2, 1, 0.9],
        [6, 5, 0.6],
      ]),
    });
    const d = await start({}, { model, manifest: { name: 'patchcore', version: '2' } });
    await connected(d);
    await post(d, 'anomalous-1');
    await waitFor(() => (deliveredIds().has('anomalous-1') ? true : undefined), 'anomaly result delivered');
    const [r] = resultsOf(hub.messages('results')) as (ResultBody['results'][number] & {
      anomaly?: {
        score: number;
        threshold: number;
        regions: { box: object; area: number; peak: number }[];
        map?: unknown;
      };
    })[];
    expect(r).toMatchObject({
      frameId: 'anomalous-1',
      defect: true,
      model: { name: 'patchcore', version: '2' },
    });
    expect(r!.anomaly!.score).toBeCloseTo(0.73, 6);
    expect(r!.anomaly!.threshold).toBe(0.5);
    expect(r!.anomaly!.regions).toHaveLength(2);
    expect(Math.max(...r!.anomaly!.regions.map((g) => g.peak))).toBeCloseTo(0.9, 5);
    expect(r!.anomaly!.map).toBeUndefined();
  });

  it('a board scored by a layout is one result upstream with its region count and defective regions; stats count regions', async () => {
    const d = await start();
    await connected(d);
    const layout = {
      regions: [
        { id: 'R1', x: 0, y: 0, width: 16, height: 16, ref: 'R1' },
        { id: 'C2', x: 16, y: 0, width: 16, height: 16, ref: 'C2' },
        { id: 'U3', x: 0, y: 16, width: 32, height: 16, ref: 'U3' },
      ],
    };
    const put = await request(`${d.url}/v1/layouts/panel-a`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(layout),
    });
    expect(put.status, put.text).toBeLessThan(300);
    const board = await encodeFrame(gradientFrame(32, 32), 32, 32, 3, 'png');
    const a = await postFrame(`${d.url}/v1/score?layout=panel-a`, board, 'image/png', {
      'x-frame-id': 'board-1',
    });
    expect(a.status, a.text).toBe(200);
    const answer = a.json as {
      defectiveRegions: string[];
      regions: { id: string; label: string; score: number }[];
    };
    await waitFor(() => (deliveredIds().has('board-1') ? true : undefined), 'board result delivered');
    const [r] = resultsOf(hub.messages('results')).filter(
      (x) => x.frameId === 'board-1',
    ) as (ResultBody['results'][number] & {
      board: {
        layout: string;
        regions: number;
        defectiveRegions: { id: string; ref: string; label: string; score: number }[];
      };
    })[];
    expect(r!.board.layout).toBe('panel-a');
    expect(r!.board.regions).toBe(3);
    expect(r!.board.defectiveRegions.map((x) => x.id)).toEqual(answer.defectiveRegions);
    for (const x of r!.board.defectiveRegions) {
      const region = answer.regions.find((y) => y.id === x.id)!;
      expect(x).toEqual({ id: region.id, ref: region.id, label: region.label, score: region.score });
    }
    const stats = await waitFor(() => {
      const s = hub
        .messages('stats')
        .map(
          (m) =>
            JSON.parse(m.body.toString('utf8')) as {
              frames: number;
              regions: number;
              defectiveRegions: number;
            },
        )
        .find((b) => b.regions > 0);
      return s;
    }, 'stats counting the regions');
    expect(stats).toMatchObject({ frames: 1, regions: 3, defectiveRegions: answer.defectiveRegions.length });
  });

  it('a 30 s broker outage with frames scored throughout: every result is delivered after reconnect', async () => {
    const d = await start();
    await connected(d);
    await hub.stop();
    const ids: string[] = [];
    const end = Date.now() + 30_000;
    for (let i = 0; Date.now() < end; i++) {
      ids.push(`outage-${i}`);
      await post(d, `outage-${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const during = await account(d);
    expect(during.delivered).toBe(0);
    expect(during.pending).toBe(ids.length);
    await hub.restart({ keepSessions: true });
    await waitFor(
      () => (ids.every((id) => deliveredIds().has(id)) ? true : undefined),
      'all results after reconnect',
      60_000,
    );
    const after = await account(d);
    expect(after).toMatchObject({ produced: ids.length, dropped: 0 });
    expect(after.produced).toBe(after.delivered + after.dropped + after.pending);
  }, 120_000);

  it('past the buffer bound, drops are counted exactly', async () => {
    const d = await start({ TELEMETRY_BUFFER_ITEMS: '20' });
    await connected(d);
    await waitFor(() => (hub.messages('events').length > 0 ? true : undefined), 'start event sent');
    await hub.stop();
    for (let i = 0; i < 50; i++) await post(d, `bounded-${i}`);
    const a = await account(d);
    expect(a.produced).toBe(50);
    expect(a.produced).toBe(a.delivered + a.dropped + a.pending);
    expect(a.dropped).toBeGreaterThanOrEqual(30);
    await hub.restart({ keepSessions: true });
    await waitFor(
      async () => ((await account(d)).pending === 0 ? true : undefined),
      'buffer drained',
      30_000,
    );
    const final = await account(d);
    expect(final.delivered + final.dropped).toBe(50);
    // The newest results survived (drop-oldest).
    expect(deliveredIds().has('bounded-49')).toBe(true);
    expect(deliveredIds().has('bounded-0')).toBe(false);
  });

  it('results pending at a restart are delivered after it', async () => {
    const d = await start();
    await connected(d);
    await hub.stop();
    for (let i = 0; i < 8; i++) await post(d, `restart-${i}`);
    const dir = d.dir;
    await d.app.stop();
    await hub.restart({ keepSessions: true });
    const again = await start({}, { dir });
    await connected(again);
    await waitFor(
      () =>
        Array.from({ length: 8 }, (_, i) => `restart-${i}`).every((id) => deliveredIds().has(id))
          ? true
          : undefined,
      'journaled results delivered',
      30_000,
    );
  });

  it('stats arrive on schedule with correct counts', async () => {
    const d = await start();
    await connected(d);
    for (let i = 0; i < 10; i++) await post(d, `stats-${i}`);
    await waitFor(
      () => {
        const frames = hub
          .messages('stats')
          .map((m) => JSON.parse(m.body.toString()) as { frames: number })
          .reduce((s, x) => s + x.frames, 0);
        return frames === 10 ? true : undefined;
      },
      'stats counting 10 frames',
      15_000,
    );
    const stats = hub.messages('stats').map((m) => JSON.parse(m.body.toString()) as Record<string, unknown>);
    const withFrames = stats.find((s) => (s.frames as number) > 0)!;
    expect(withFrames).toMatchObject({
      latencyMs: { p50: expect.any(Number) as number },
      queueRejections: 0,
      telemetryDrops: 0,
    });
    expect(Object.values(withFrames.labels as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(
      withFrames.frames,
    );
    // statsIntervalSec is 1: consecutive snapshots are about a second apart.
    const times = stats.map((s) => Date.parse(s.to as string));
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.every((g) => g > 500 && g < 3000)).toBe(true);
  });
});
