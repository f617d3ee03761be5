import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { buildConstantModel, ultralyticsMetadata } from '../helpers/model-families.js';

/**
 * YOLO instance segmentation through the whole HTTP path (docs/model-families.md, "Instance
 * segmentation"). The models are built to Ultralytics' `-seg` export contract: `output0` with the
 * boxes and 32 mask coefficients per box, `output1` the prototypes [N, 32, mh, mw] at a quarter of
 * the input; metadata `task: segment` (and `end2end: True` for the YOLO26 head).
 *
 * By hand: prototype 0 is +4 on the prototype pixels x 10..29, y 8..19 and −4 elsewhere, the
 * others 0; the kept box has coefficients (1, 0, …). Upsampled bilinearly (align_corners=False)
 * to the 160 × 160 input, the logit is > 0 on input pixels x 40..119, y 32..79 (the edge falls
 * half-way between prototype pixels 9 and 10: (x + 0.5) / 4 − 0.5 > 9.5 from x = 40), less the
 * four corner pixels (see EXPECTED_POLYGON). A 320 × 240 frame is letterboxed at scale 0.5 with 20
 * rows of padding on top, so those are x 80..238, y 24..118 in frame pixels, and the box
 * (32, 24)–(128, 88) is (64, 8)–(256, 136).
 */

let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

const LABELS = ['solder', 'void'];
const NM = 32;
const MH = 40;
const MW = 40;

function prototypes(): number[] {
  const p = new Array<number>(NM * MH * MW).fill(0);
  for (let y = 0; y < MH; y++)
    for (let x = 0; x < MW; x++) p[y * MW + x] = x >= 10 && x < 30 && y >= 8 && y < 20 ? 4 : -4;
  return p;
}

const coefficients = (first: number): number[] => [first, ...new Array<number>(NM - 1).fill(0)];

/** The NMS head: [4 + C + 32, boxes], channel-first. */
function nmsHead(
  boxes: { cx: number; cy: number; w: number; h: number; scores: number[]; coef: number[] }[],
): number[] {
  const fields = 4 + LABELS.length + NM;
  const out = new Array<number>(fields * boxes.length).fill(0);
  boxes.forEach((b, i) => {
    const column = [b.cx, b.cy, b.w, b.h, ...b.scores, ...b.coef];
    column.forEach((v, f) => (out[f * boxes.length + i] = v));
  });
  return out;
}

/**
 * The mask's outer contour, clockwise from its top-left pixel. Its corners are cut by one input
 * pixel: at the corner pixel (40, 32) the bilinear weights (0.625 towards the inside on each axis)
 * give 0.375 · (−4) + 0.625 · (0.375 · (−4) + 0.625 · 4) = −0.875, off, while (41, 32) and
 * (40, 33) read +0.375, on. In frame pixels (x / 0.5, (y − 20) / 0.5):
 */
const EXPECTED_POLYGON = [
  [82, 24],
  [236, 24],
  [238, 26],
  [238, 116],
  [236, 118],
  [82, 118],
  [80, 116],
  [80, 26],
];

interface Seg {
  task: string;
  defect: boolean;
  detections: {
    label: string;
    score: number;
    box: { x: number; y: number; width: number; height: number };
    mask: { polygon: [number, number][] };
  }[];
}

async function score(d: Daemon): Promise<Seg> {
  const frame = await encodeFrame(solidFrame(320, 240, 3, 90), 320, 240, 3, 'png');
  const a = await postFrame(`${d.url}/v1/score`, frame, 'image/png');
  expect(a.status, a.text).toBe(200);
  return a.json as Seg;
}

/** The AVA route's entities of the same frame: label and box normalised to the frame. */
async function avaEntities(d: Daemon): Promise<[string, Record<string, number>][]> {
  const frame = await encodeFrame(solidFrame(320, 240, 3, 90), 320, 240, 3, 'png');
  const a = await postFrame(`${d.url}/score`, frame, 'image/png');
  expect(a.status, a.text).toBe(200);
  const body = a.json as {
    inferences: { entity: { tag: { value: string }; box: Record<string, number> } }[];
  };
  return body.inferences.map((i) => [i.entity.tag.value, i.entity.box]);
}

describe('YOLO segmentation', () => {
  it('NMS head (task: segment): masks decoded as Ultralytics does, as polygons in frame pixels', async () => {
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 160, 160],
      outputs: [
        {
          name: 'output0',
          dims: [4 + LABELS.length + NM, 3],
          values: nmsHead([
            { cx: 80, cy: 56, w: 96, h: 64, scores: [0.9, 0.1], coef: coefficients(1) },
            // Overlaps the first (IoU 0.98): NMS drops it, and its mask with it.
            { cx: 81, cy: 56, w: 96, h: 64, scores: [0.8, 0.1], coef: coefficients(-1) },
            { cx: 20, cy: 20, w: 10, h: 10, scores: [0.1, 0.05], coef: coefficients(1) },
          ]),
        },
        { name: 'output1', dims: [NM, MH, MW], values: prototypes() },
      ],
      metadata: ultralyticsMetadata({ task: 'segment', names: LABELS, imgsz: [160, 160] }),
    });
    daemon = await startDaemon({ model, manifest: { defectLabels: ['void'] } });
    const a = await score(daemon);
    expect(a.task).toBe('detection');
    expect(a.detections).toHaveLength(1);
    const [d] = a.detections;
    expect(d).toMatchObject({ label: 'solder', box: { x: 64, y: 8, width: 192, height: 128 } });
    expect(d!.score).toBeCloseTo(0.9, 6);
    expect(d!.mask.polygon).toEqual(EXPECTED_POLYGON);
    expect(a.defect).toBe(false);
    // /score answers the box as an entity, normalised to the frame.
    expect(await avaEntities(daemon)).toEqual([['solder', { l: 0.2, t: 0.033333, w: 0.6, h: 0.533333 }]]);
  });

  it('end-to-end head (YOLO26, end2end: True): final rows with coefficients, no NMS, same masks', async () => {
    const rows = 4;
    const fields = 6 + NM;
    const values = new Array<number>(rows * fields).fill(0);
    const put = (r: number, row: number[]): void => row.forEach((v, k) => (values[r * fields + k] = v));
    put(0, [32, 24, 128, 88, 0.9, 1, ...coefficients(1)]);
    // An overlapping final box is kept: the head already chose it. Its coefficients are 0, so every
    // logit is 0 and its mask is empty (on means > 0).
    put(1, [33, 24, 129, 88, 0.7, 0, ...coefficients(0)]);
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 160, 160],
      outputs: [
        { name: 'output0', dims: [rows, fields], values },
        { name: 'output1', dims: [NM, MH, MW], values: prototypes() },
      ],
      metadata: ultralyticsMetadata({ task: 'segment', names: LABELS, imgsz: [160, 160], end2end: true }),
    });
    daemon = await startDaemon({ model, manifest: { defectLabels: ['void'] } });
    const a = await score(daemon);
    expect(a.detections.map((d) => d.label)).toEqual(['void', 'solder']);
    expect(a.defect).toBe(true);
    expect(a.detections[0]!.mask.polygon).toEqual(EXPECTED_POLYGON);
    expect(a.detections[1]!.mask.polygon).toEqual([]);
  });

  it('a segmentation model without its prototypes output is refused at load', async () => {
    const model = buildConstantModel({
      inputName: 'images',
      input: [3, 160, 160],
      outputs: [{ name: 'output0', dims: [4 + LABELS.length + NM, 3], values: new Array(114).fill(0) }],
      metadata: ultralyticsMetadata({ task: 'segment', names: LABELS, imgsz: [160, 160] }),
    });
    daemon = await startDaemon({ model });
    expect((await request(`${daemon.url}/v2/health/ready`)).status).toBe(503);
    expect((await request(`${daemon.url}/v1/model`)).json).toMatchObject({
      status: 'failed',
      lastError: { code: 'EDGE_ERR_MODEL_SHAPE_MISMATCH' },
    });
  });
});
