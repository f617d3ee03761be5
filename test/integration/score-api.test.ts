import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  defaultTestModel,
  startDaemon,
  TEST_LABELS,
  type Daemon,
  type DaemonOptions,
} from '../helpers/daemon.js';
import { encodeFrame, solidFrame, toBgr, type Channels, type FrameFormat } from '../helpers/frames.js';
import { metricValue, postFrame, request, scrape, type Answer } from '../helpers/http.js';
import {
  buildClassifier,
  buildWrongShapeModel,
  buildYoloV8Detector,
  corruptModel,
} from '../helpers/onnx-builder.js';

/** The scoring API as a line camera and an AVA graph see it (README, "HTTP interface"). */

interface Classification {
  label: string;
  score: number;
}
interface Detection {
  label: string;
  score: number;
  box: { x: number; y: number; width: number; height: number };
}
interface V1Answer {
  frameId: string;
  cameraId: string | null;
  model: { name: string; version: string };
  task: string;
  defect: boolean;
  classification?: Classification[];
  detections?: Detection[];
  timing: Record<string, number>;
}
interface AvaAnswer {
  inferences: {
    type: string;
    classification?: { tag: { value: string; confidence: number } };
    entity?: {
      tag: { value: string; confidence: number };
      box: { l: number; t: number; w: number; h: number };
    };
  }[];
}

let daemon: Daemon | undefined;

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

async function start(opts: DaemonOptions = {}): Promise<Daemon> {
  daemon = await startDaemon(opts);
  return daemon;
}

const W = 48;
const H = 40;

/** A frame of one grey level in every accepted wire format, with the headers it needs. */
type Wire = 'jpeg' | 'png' | 'webp' | 'tiff' | 'bmp' | 'mono8' | 'rgb8' | 'bgr8';
const WIRES: Wire[] = ['jpeg', 'png', 'webp', 'tiff', 'bmp', 'mono8', 'rgb8', 'bgr8'];

async function frameIn(
  wire: Wire,
  grey: number,
): Promise<{ body: Buffer; contentType: string; headers: Record<string, string> }> {
  if (wire === 'mono8' || wire === 'rgb8' || wire === 'bgr8') {
    const channels: Channels = wire === 'mono8' ? 1 : 3;
    const pixels = solidFrame(W, H, channels, grey);
    return {
      body: wire === 'bgr8' ? toBgr(pixels) : pixels,
      contentType: 'application/octet-stream',
      headers: { 'x-frame-format': wire, 'x-frame-width': String(W), 'x-frame-height': String(H) },
    };
  }
  const format: FrameFormat = wire;
  return {
    body: await encodeFrame(solidFrame(W, H, 3, grey), W, H, 3, format, { lossless: true }),
    contentType: `image/${format}`,
    headers: {},
  };
}

function expectSortedTopK(classification: Classification[] | undefined, labels: string[], k: number): void {
  expect(classification).toBeDefined();
  const c = classification!;
  expect(c).toHaveLength(k);
  for (let i = 1; i < c.length; i++) expect(c[i - 1]!.score).toBeGreaterThanOrEqual(c[i]!.score);
  for (const { label, score } of c) {
    expect(labels).toContain(label);
    expect(score).toBeGreaterThanOrEqual(0);
    expect(score).toBeLessThanOrEqual(1);
  }
  expect(new Set(c.map((x) => x.label)).size).toBe(k);
}

describe('POST /v1/score', () => {
  // The default test classifier picks the class whose centre (0, 0.5, 1) is nearest the frame's mean
  // brightness: black → ok, mid grey → bridge, white → missing (bridge and missing are defects).
  const expectations = [
    { grey: 0, label: 'ok', defect: false },
    { grey: 128, label: 'bridge', defect: true },
    { grey: 255, label: 'missing', defect: true },
  ];

  it.each(WIRES)('scores a %s frame: ids, model, task, defect, top-K and timing', async (wire) => {
    const d = await start();
    for (const [i, e] of expectations.entries()) {
      const frame = await frameIn(wire, e.grey);
      const answer = await postFrame(`${d.url}/v1/score`, frame.body, frame.contentType, {
        ...frame.headers,
        'x-frame-id': `${wire}-${i}`,
        'x-camera-id': 'aoi-cam-2',
      });
      expect(answer.status, answer.text).toBe(200);
      const body = answer.json as V1Answer;
      expect(body).toMatchObject({
        frameId: `${wire}-${i}`,
        cameraId: 'aoi-cam-2',
        model: { name: 'test-classifier', version: '1' },
        task: 'classification',
        defect: e.defect,
      });
      expect(body).not.toHaveProperty('detections');
      expectSortedTopK(body.classification, TEST_LABELS, 3);
      expect(body.classification![0]!.label).toBe(e.label);
      expect(body.classification![0]!.score).toBeGreaterThan(0.9);
      const { timing } = body;
      for (const k of ['queueMs', 'preprocessMs', 'inferenceMs', 'postprocessMs', 'totalMs']) {
        expect(timing[k], k).toBeTypeOf('number');
        expect(timing[k], k).toBeGreaterThanOrEqual(0);
      }
      expect(timing.totalMs).toBeGreaterThanOrEqual(timing.preprocessMs!);
      expect(timing.totalMs).toBeGreaterThanOrEqual(timing.inferenceMs!);
      expect(timing.batchSize).toBe(1);
    }
  });

  it('without X-Frame-Id the daemon names the frame; without X-Camera-Id cameraId is null', async () => {
    const d = await start();
    const frame = await frameIn('png', 0);
    const a = (await postFrame(`${d.url}/v1/score`, frame.body, frame.contentType)).json as V1Answer;
    const b = (await postFrame(`${d.url}/v1/score`, frame.body, frame.contentType)).json as V1Answer;
    expect(a.frameId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(b.frameId).not.toBe(a.frameId);
    expect(a.cameraId).toBeNull();
  });

  it('Content-Type parameters and case do not matter', async () => {
    const d = await start();
    const frame = await frameIn('png', 255);
    const answer = await postFrame(`${d.url}/v1/score`, frame.body, 'Image/PNG; charset=binary');
    expect(answer.status).toBe(200);
    expect((answer.json as V1Answer).classification![0]!.label).toBe('missing');
  });

  it('raw rgb8 and bgr8 reach the model in its colour order', async () => {
    // Each colour channel drives its own class: a red frame is "red" however it was sent.
    const labels = ['red', 'green', 'blue'];
    const d = await start({
      model: buildClassifier({
        batch: 'dynamic',
        channels: 3,
        height: 16,
        width: 16,
        classes: 3,
        weights: [
          [10, 0, 0],
          [0, 10, 0],
          [0, 0, 10],
        ],
      }),
      manifest: {
        name: 'rgb',
        version: '1',
        labels,
        input: { resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
        output: { format: 'probabilities', topK: 1 },
      },
    });
    const colours: [string, number[]][] = [
      ['red', [255, 0, 0]],
      ['green', [0, 255, 0]],
      ['blue', [0, 0, 255]],
    ];
    for (const [label, rgb] of colours) {
      const pixels = solidFrame(W, H, 3, rgb);
      for (const [format, body] of [
        ['rgb8', pixels],
        ['bgr8', toBgr(pixels)],
      ] as const) {
        const answer = await postFrame(`${d.url}/v1/score`, body, 'application/octet-stream', {
          'x-frame-format': format,
          'x-frame-width': String(W),
          'x-frame-height': String(H),
        });
        expect((answer.json as V1Answer).classification, `${label} as ${format}`).toEqual([
          { label, score: expect.any(Number) as number },
        ]);
      }
    }
  });
});

describe('POST /score (Azure Video Analyzer HTTP extension)', () => {
  it('answers classification inferences with the same tags and confidences as /v1/score', async () => {
    const d = await start();
    const frame = await frameIn('jpeg', 128);
    const v1 = (await postFrame(`${d.url}/v1/score`, frame.body, frame.contentType)).json as V1Answer;
    const answer = await postFrame(`${d.url}/score`, frame.body, frame.contentType);
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({
      inferences: v1.classification!.map((c) => ({
        type: 'classification',
        classification: { tag: { value: c.label, confidence: c.score } },
      })),
    });
    expect((answer.json as AvaAnswer).inferences[0]!.classification!.tag.value).toBe('bridge');
  });
});

describe('a YOLOv8 detector behind a letterbox', () => {
  // Model input 64×64. Boxes are constant, in model-input pixels (cx, cy, w, h).
  const detector = buildYoloV8Detector({
    batch: 'dynamic',
    height: 64,
    width: 64,
    classes: 2,
    predictions: [
      { cx: 32, cy: 32, w: 16, h: 8, scores: [0.9, 0.05] }, // bridge
      { cx: 10, cy: 24, w: 8, h: 8, scores: [0.1, 0.8] }, // missing
      { cx: 33, cy: 32, w: 16, h: 8, scores: [0.7, 0.0] }, // bridge, overlaps the first: NMS drops it
      { cx: 40, cy: 6, w: 10, h: 4, scores: [0.95, 0.0] }, // inside the top padding of a 2:1 frame
      { cx: 50, cy: 40, w: 6, h: 6, scores: [0.1, 0.2] }, // under scoreThreshold
    ],
  });
  const manifest = {
    name: 'test-detector',
    version: '3',
    task: 'detection',
    labels: ['bridge', 'missing'],
    defectLabels: ['bridge'],
    input: { width: 64, height: 64, resize: 'letterbox', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
    output: { format: 'yolov8', scoreThreshold: 0.25, iouThreshold: 0.45 },
  };

  async function both(d: Daemon, width: number, height: number): Promise<{ v1: V1Answer; ava: AvaAnswer }> {
    const png = await encodeFrame(solidFrame(width, height, 3, 90), width, height, 3, 'png');
    const v1 = await postFrame(`${d.url}/v1/score`, png, 'image/png');
    const ava = await postFrame(`${d.url}/score`, png, 'image/png');
    expect(v1.status, v1.text).toBe(200);
    expect(ava.status, ava.text).toBe(200);
    return { v1: v1.json as V1Answer, ava: ava.json as AvaAnswer };
  }

  it('/v1/score returns boxes in pixels of the frame as posted (letterbox undone)', async () => {
    const d = await start({ model: detector, manifest });
    // A 128×64 frame is scaled by 0.5 to 64×32 and padded by 16 rows above and below.
    const { v1 } = await both(d, 128, 64);
    expect(v1).toMatchObject({
      task: 'detection',
      defect: true,
      model: { name: 'test-detector', version: '3' },
    });
    expect(v1).not.toHaveProperty('classification');
    expect(v1.detections).toHaveLength(2);
    const [first, second] = v1.detections!;
    expect(first!.label).toBe('bridge');
    expect(first!.score).toBeCloseTo(0.9, 5);
    expect(first!.box).toEqual({ x: 48, y: 24, width: 32, height: 16 });
    expect(second!.label).toBe('missing');
    expect(second!.score).toBeCloseTo(0.8, 5);
    expect(second!.box).toEqual({ x: 12, y: 8, width: 16, height: 16 });
  });

  it.each([
    [128, 64],
    [100, 150],
    [640, 480],
  ])(
    '/score entities of a %i×%i frame are the /v1/score boxes over the frame size',
    async (width, height) => {
      const d = await start({ model: detector, manifest });
      const { v1, ava } = await both(d, width, height);
      expect(v1.detections!.length).toBeGreaterThan(0);
      expect(ava.inferences).toHaveLength(v1.detections!.length);
      v1.detections!.forEach((det, i) => {
        const inf = ava.inferences[i]!;
        expect(inf.type).toBe('entity');
        expect(inf.entity!.tag).toEqual({ value: det.label, confidence: det.score });
        const { l, t, w, h } = inf.entity!.box;
        expect(l).toBeCloseTo(det.box.x / width, 5);
        expect(t).toBeCloseTo(det.box.y / height, 5);
        expect(w).toBeCloseTo(det.box.width / width, 5);
        expect(h).toBeCloseTo(det.box.height / height, 5);
        for (const v of [l, t, w, h]) {
          expect(v).toBeGreaterThanOrEqual(0);
          expect(v).toBeLessThanOrEqual(1);
        }
        expect(l + w).toBeLessThanOrEqual(1 + 1e-6);
        expect(t + h).toBeLessThanOrEqual(1 + 1e-6);
      });
    },
  );
});

describe('health and model routes', () => {
  it('live and ready answer 200 while a warmed model is active', async () => {
    const d = await start();
    const live = await request(`${d.url}/v2/health/live`);
    const ready = await request(`${d.url}/v2/health/ready`);
    expect(live.status).toBe(200);
    expect(ready.status).toBe(200);
    expect(ready.json).toMatchObject({ ready: true });
  });

  it('GET /v1/model shows the manifest, the sha256 of the file and the CPU provider', async () => {
    const { model } = defaultTestModel();
    const d = await start();
    const answer = await request(`${d.url}/v1/model`);
    expect(answer.status).toBe(200);
    const body = answer.json as {
      status: string;
      model: Record<string, unknown> & { manifest: Record<string, unknown> };
      lastError: unknown;
    };
    expect(body.status).toBe('ready');
    expect(body.lastError).toBeNull();
    expect(body.model.sha256).toBe(createHash('sha256').update(model).digest('hex'));
    expect(body.model.sizeBytes).toBe(model.length);
    expect(body.model.executionProvider).toBe('cpu');
    expect(body.model.dynamicBatch).toBe(true);
    expect(Date.parse(body.model.loadedAt as string)).not.toBeNaN();
    expect(body.model.manifest).toMatchObject({
      name: 'test-classifier',
      version: '1',
      task: 'classification',
      labels: TEST_LABELS,
      defectLabels: ['bridge', 'missing'],
      input: { width: 32, height: 32, resize: 'stretch', color: 'rgb', layout: 'nchw', dtype: 'float32' },
      output: { format: 'logits', topK: 3 },
    });
    // Nothing of the machine's file system is exposed.
    expect(answer.text).not.toContain(d.dir);
  });

  it('a corrupt model: the daemon still starts, live 200, ready 503, scoring 503 EDGE_ERR_NOT_READY', async () => {
    const { model, manifest } = defaultTestModel();
    const d = await start({ model: corruptModel(model), manifest });
    expect((await request(`${d.url}/v2/health/live`)).status).toBe(200);
    const ready = await request(`${d.url}/v2/health/ready`);
    expect(ready.status).toBe(503);
    expect(ready.json).toMatchObject({ ready: false });
    const frame = await frameIn('png', 0);
    for (const route of ['/v1/score', '/score']) {
      const answer = await postFrame(`${d.url}${route}`, frame.body, frame.contentType);
      expect(answer.status).toBe(503);
      expect(answer.json).toEqual({
        error: { code: 'EDGE_ERR_NOT_READY', message: expect.any(String) as string },
      });
    }
    const info = await request(`${d.url}/v1/model`);
    expect(info.status).toBe(200);
    expect(info.json).toMatchObject({
      status: 'failed',
      model: null,
      lastError: { code: 'EDGE_ERR_MODEL_LOAD_FAILED', message: expect.any(String) as string },
    });
    const samples = await scrape(d.url);
    expect(
      metricValue(samples, 'edge_scorer_model_loads_total', { outcome: 'EDGE_ERR_MODEL_LOAD_FAILED' }),
    ).toBe(1);
    expect(metricValue(samples, 'edge_scorer_ready')).toBe(0);
  });

  it('a model whose input is not an image: ready 503 with EDGE_ERR_MODEL_SHAPE_MISMATCH', async () => {
    const d = await start({ model: buildWrongShapeModel({ kind: 'input-rank' }) });
    expect((await request(`${d.url}/v2/health/live`)).status).toBe(200);
    expect((await request(`${d.url}/v2/health/ready`)).status).toBe(503);
    expect((await request(`${d.url}/v1/model`)).json).toMatchObject({
      status: 'failed',
      lastError: { code: 'EDGE_ERR_MODEL_SHAPE_MISMATCH' },
    });
  });

  it('a model whose output does not fit its manifest: ready 503 with EDGE_ERR_MODEL_SHAPE_MISMATCH', async () => {
    const d = await start({
      model: buildWrongShapeModel({ kind: 'output-rank' }),
      manifest: { task: 'detection', labels: ['bridge'], output: { format: 'yolov8' } },
    });
    expect((await request(`${d.url}/v2/health/ready`)).status).toBe(503);
    expect((await request(`${d.url}/v1/model`)).json).toMatchObject({
      status: 'failed',
      lastError: { code: 'EDGE_ERR_MODEL_SHAPE_MISMATCH' },
    });
  });
});

describe('API_TOKEN', () => {
  const TOKEN = 'line-7-token-5f2a9c';

  async function scoreWith(d: Daemon, route: string, authorization?: string): Promise<Answer> {
    const frame = await frameIn('png', 255);
    return postFrame(
      `${d.url}${route}`,
      frame.body,
      frame.contentType,
      authorization === undefined ? {} : { authorization },
    );
  }

  it('scoring needs the bearer token; health and metrics stay open', async () => {
    const d = await start({ env: { API_TOKEN: TOKEN } });
    for (const route of ['/v1/score', '/score']) {
      for (const auth of [
        undefined,
        'Bearer wrong-token-123',
        `Basic ${TOKEN}`,
        `Bearer ${TOKEN}x`,
        'Bearer ',
      ]) {
        const answer = await scoreWith(d, route, auth);
        expect({ route, auth, status: answer.status, body: answer.json }).toEqual({
          route,
          auth,
          status: 401,
          body: { error: { code: 'EDGE_ERR_UNAUTHORIZED', message: expect.any(String) as string } },
        });
        expect(answer.text).not.toContain(TOKEN);
      }
      expect((await scoreWith(d, route, `Bearer ${TOKEN}`)).status).toBe(200);
    }
    expect((await request(`${d.url}/v2/health/live`)).status).toBe(200);
    expect((await request(`${d.url}/v2/health/ready`)).status).toBe(200);
    const metrics = await request(`${d.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(
      metricValue(await scrape(d.url), 'edge_scorer_http_requests_total', {
        route: '/v1/score',
        outcome: 'EDGE_ERR_UNAUTHORIZED',
      }),
    ).toBe(5);
    // The token never reaches the logs.
    expect(JSON.stringify(d.logs)).not.toContain(TOKEN);
  });
});
