import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import {
  buildConstantModel,
  buildLyuwenyuRtdetr,
  end2endRows,
  ultralyticsMetadata,
} from '../helpers/model-families.js';

/**
 * End-to-end YOLO heads and Ultralytics RT-DETR through the whole HTTP path, real onnxruntime
 * and sharp; the families and their answers are in docs/model-families.md.
 */

let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

const LABELS = ['bridge', 'missing'];

interface V1 {
  task: string;
  defect: boolean;
  detections: {
    label: string;
    score: number;
    box: { x: number; y: number; width: number; height: number };
  }[];
}
interface Ava {
  inferences: {
    type: string;
    entity: { tag: { value: string }; box: { l: number; t: number; w: number; h: number } };
  }[];
}

async function png(width: number, height: number): Promise<Buffer> {
  return encodeFrame(solidFrame(width, height, 3, 128), width, height, 3, 'png');
}

describe('YOLO26 / YOLOv10 end-to-end head, known from its metadata alone', () => {
  it('answers every final box in frame pixels, overlapping boxes included, on /v1/score and /score', async () => {
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 64, 64],
      batch: 1,
      outputs: [
        {
          name: 'output0',
          dims: [300, 6],
          values: end2endRows(
            [
              [16, 18, 32, 28, 0.9, 0],
              [17, 18, 33, 28, 0.8, 0],
              [40, 30, 48, 40, 0.6, 1],
              [0, 8, 8, 16, 0.1, 1],
            ],
            300,
          ),
        },
      ],
      metadata: ultralyticsMetadata({ task: 'detect', names: LABELS, imgsz: [64, 64], end2end: true }),
    });
    daemon = await startDaemon({ model, manifest: { defectLabels: ['missing'] } });
    const frame = await png(128, 96); // letterbox: r = 0.5, 8 rows of padding on top
    const v1 = await postFrame(`${daemon.url}/v1/score`, frame, 'image/png');
    expect(v1.status).toBe(200);
    const a = v1.json as V1;
    expect(a.task).toBe('detection');
    expect(a.defect).toBe(true);
    expect(a.detections.map((d) => [d.label, d.box])).toEqual([
      ['bridge', { x: 32, y: 20, width: 32, height: 20 }],
      ['bridge', { x: 34, y: 20, width: 32, height: 20 }],
      ['missing', { x: 80, y: 44, width: 16, height: 20 }],
    ]);
    const ava = await postFrame(`${daemon.url}/score`, frame, 'image/png');
    expect(ava.status).toBe(200);
    const entities = (ava.json as Ava).inferences.map((i) => [i.type, i.entity.tag.value, i.entity.box]);
    expect(entities).toEqual([
      ['entity', 'bridge', roundBox({ l: 0.25, t: 20 / 96, w: 0.25, h: 20 / 96 })],
      ['entity', 'bridge', roundBox({ l: 34 / 128, t: 20 / 96, w: 0.25, h: 20 / 96 })],
      ['entity', 'missing', roundBox({ l: 80 / 128, t: 44 / 96, w: 16 / 128, h: 20 / 96 })],
    ]);
    const info = (await request(`${daemon.url}/v1/model`)).json as {
      model: { manifest: { output: { format: string } } };
    };
    expect(info.model.manifest.output.format).toBe('yolo-end2end');
  });
});

function roundBox(b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(b).map(([k, v]) => [k, Math.round(v * 1e6) / 1e6]));
}

describe('Ultralytics RT-DETR', () => {
  it('stretches the frame and reads normalised boxes with per-class scores', async () => {
    const rows = [
      [0.5, 0.5, 0.25, 0.5, 0.2, 0.7],
      [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
    ].flat();
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 64, 64],
      outputs: [{ name: 'output0', dims: [2, 6], values: rows }],
      metadata: ultralyticsMetadata({
        task: 'detect',
        names: LABELS,
        imgsz: [64, 64],
        description: 'Ultralytics rtdetr-l model trained on pcb.yaml',
      }),
    });
    daemon = await startDaemon({ model });
    const res = await postFrame(`${daemon.url}/v1/score`, await png(200, 100), 'image/png');
    expect(res.status).toBe(200);
    const a = res.json as V1;
    expect(a.detections.map((d) => [d.label, d.box])).toEqual([
      ['missing', { x: 75, y: 25, width: 50, height: 50 }],
    ]);
    expect(a.detections[0]!.score).toBeCloseTo(0.7, 6);
  });
});

describe('a detector whose output matches no known layout is refused at load', () => {
  it('yolo-end2end declared over a [N, 300, 7] head: EDGE_ERR_MODEL_SHAPE_MISMATCH, not ready', async () => {
    const model = buildConstantModel({
      input: [3, 32, 32],
      outputs: [{ name: 'output0', dims: [300, 7], values: new Array<number>(2100).fill(0) }],
    });
    daemon = await startDaemon({
      model,
      manifest: { task: 'detection', labels: LABELS, output: { format: 'yolo-end2end' } },
    });
    expect((await request(`${daemon.url}/v2/health/ready`)).status).toBe(503);
    expect((await request(`${daemon.url}/v1/model`)).json).toMatchObject({
      status: 'failed',
      lastError: { code: 'EDGE_ERR_MODEL_SHAPE_MISMATCH' },
    });
  });
});

describe('lyuwenyu/RT-DETR export with orig_target_sizes', () => {
  it('feeds each frame size and reports the graph’s boxes as frame pixels', async () => {
    const model = buildLyuwenyuRtdetr({
      queries: [
        { box: [0.25, 0.5, 0.5, 0.75], score: 0.8, label: 1 }, // × (200, 100) → x 50..100, y 50..75
        { box: [0.3, 0.5, 0.55, 0.75], score: 0.7, label: 1 }, // overlapping: kept (no NMS)
        { box: [0, 0, 0.1, 0.1], score: 0.1, label: 0 }, // below the threshold
      ],
    });
    daemon = await startDaemon({ model, manifest: { labels: LABELS, defectLabels: ['missing'] } });
    const info = (await request(`${daemon.url}/v1/model`)).json as {
      model: { manifest: { task: string; input: { resize: string }; output: { format: string } } };
    };
    expect(info.model.manifest).toMatchObject({
      task: 'detection',
      input: { resize: 'stretch' },
      output: { format: 'rtdetr-lyuwenyu' },
    });
    const res = await postFrame(`${daemon.url}/v1/score`, await png(200, 100), 'image/png');
    expect(res.status).toBe(200);
    const a = res.json as V1;
    expect(a.defect).toBe(true);
    expect(a.detections.map((d) => [d.label, d.box])).toEqual([
      ['missing', { x: 50, y: 50, width: 50, height: 25 }],
      ['missing', { x: 60, y: 50, width: 50, height: 25 }],
    ]);
    // Another frame size, another answer: the size really is fed per frame.
    const small = (await postFrame(`${daemon.url}/v1/score`, await png(40, 20), 'image/png')).json as V1;
    expect(small.detections[0]!.box).toEqual({ x: 10, y: 10, width: 10, height: 5 });
  });
});

describe('YOLO26 OBB, known from its metadata', () => {
  it('answers rotated boxes with corners in frame pixels on /v1/score, their bounds on /score', async () => {
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 64, 64],
      outputs: [
        { name: 'output0', dims: [2, 7], values: [32, 28, 20, 10, 0.9, 1, Math.PI / 2, 0, 0, 0, 0, 0, 0, 0] },
      ],
      metadata: ultralyticsMetadata({ task: 'obb', names: LABELS, imgsz: [64, 64], end2end: true }),
    });
    daemon = await startDaemon({ model });
    const frame = await png(128, 96);
    const a = (await postFrame(`${daemon.url}/v1/score`, frame, 'image/png')).json as V1 & {
      detections: { rotatedBox: object; corners: number[][] }[];
    };
    // Centre (32, 28) → (64, 40), 40 × 20 frame pixels turned by 90°: 20 wide, 40 high.
    expect(a.detections).toHaveLength(1);
    expect(a.detections[0]!.rotatedBox).toEqual({ cx: 64, cy: 40, width: 40, height: 20, angle: 1.570796 });
    expect(a.detections[0]!.box).toEqual({ x: 54, y: 20, width: 20, height: 40 });
    expect(a.detections[0]!.corners).toEqual([
      [54, 60],
      [54, 20],
      [74, 20],
      [74, 60],
    ]);
    const ava = (await postFrame(`${daemon.url}/score`, frame, 'image/png')).json as Ava;
    expect(ava.inferences[0]!.entity.box).toEqual(
      roundBox({ l: 54 / 128, t: 20 / 96, w: 20 / 128, h: 40 / 96 }),
    );
  });
});
