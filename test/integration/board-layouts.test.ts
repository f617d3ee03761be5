import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, makeRaw } from '../helpers/frames.js';
import { metricValue, postFrame, request, scrape, type Answer } from '../helpers/http.js';
import { buildYoloV8Detector } from '../helpers/onnx-builder.js';

/** A whole board in one request (README, "Board layouts"). */

interface RegionAnswer {
  id: string;
  ref?: string;
  defect: boolean;
  label: string | null;
  score: number | null;
  classification?: { label: string; score: number }[];
  detections?: {
    label: string;
    score: number;
    box: { x: number; y: number; width: number; height: number };
  }[];
}
interface BoardAnswer {
  layout: string;
  defect: boolean;
  defectiveRegions: string[];
  board: { width: number; height: number };
  regions: RegionAnswer[];
}
interface V1 {
  defect: boolean;
  classification: { label: string; score: number }[];
}

let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

const BW = 320;
const BH = 240;
/** A board with texture that differs everywhere, so every region scores differently. */
const boardPx = (x: number, y: number): number[] => [
  (x * 7 + y * 3) % 256,
  (x * x + y * 5) % 256,
  Math.abs(Math.sin(x / 9) * Math.cos(y / 7)) * 255,
];

/** A part drawn upright (30 × 12), then placed on the board turned 90° clockwise about (115, 106). */
const PART_W = 30;
const PART_H = 12;
const partPx = (i: number, j: number): number[] => [i * 8, 255 - j * 20, (i * j) % 256];

function syntheticBoard(): Buffer {
  const board = makeRaw(BW, BH, 3, boardPx);
  for (let j = 0; j < PART_H; j++)
    for (let i = 0; i < PART_W; i++) {
      // Clockwise by 90° in image coordinates: offset (dx, dy) from the centre goes to (−dy, dx).
      const bx = 120 - j;
      const by = 91 + i;
      board.set(partPx(i, j), (by * BW + bx) * 3);
    }
  return board;
}

const REGIONS = [
  { id: 'R1', x: 0, y: 0, width: 40, height: 20, ref: 'R1', type: '0402' },
  { id: 'C7', x: 200, y: 30, width: 64, height: 16, ref: 'C7', type: '0603' },
  { id: 'U3', x: 150, y: 120, width: 120, height: 100, ref: 'U3', type: 'QFN-48' },
  { id: 'edge', x: 280, y: 200, width: 40, height: 40 },
  { id: 'tiny', x: 60, y: 180, width: 5, height: 3 },
  // Overlaps U3: regions may share pixels.
  { id: 'overlap', x: 140, y: 110, width: 60, height: 60 },
  { id: 'turned', x: 100, y: 100, width: PART_W, height: PART_H, angle: 90 },
];

async function putLayout(name: string, body: unknown): Promise<Answer> {
  return request(`${daemon!.url}/v1/layouts/${name}`, {
    method: 'PUT',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
}

function close(a: number, b: number, tolerance = 1e-5): void {
  expect(Math.abs(a - b)).toBeLessThanOrEqual(tolerance);
}

/** The answer to a region's upright pixels of `raw` (the synthetic board) posted alone as a PNG. */
async function scoreAlone(
  raw: Buffer,
  region: { x: number; y: number; width: number; height: number },
): Promise<V1> {
  const crop = await sharp(raw, { raw: { width: BW, height: BH, channels: 3 } })
    .extract({ left: region.x, top: region.y, width: region.width, height: region.height })
    .raw()
    .toBuffer();
  return scorePng(crop, region.width, region.height);
}

async function scorePng(pixels: Buffer, width: number, height: number): Promise<V1> {
  const alone = await postFrame(
    `${daemon!.url}/v1/score`,
    await encodeFrame(pixels, width, height, 3, 'png'),
    'image/png',
  );
  return alone.json as V1;
}

describe('board layouts', () => {
  it('scores every region as if each crop were posted alone, turned regions cut upright', async () => {
    daemon = await startDaemon();
    const put = await putLayout('board-a', { regions: REGIONS });
    expect(put.status, put.text).toBe(201);
    const list = await request(`${daemon.url}/v1/layouts`);
    expect(list.json).toEqual({ layouts: [{ name: 'board-a', regions: REGIONS.length }] });

    const raw = syntheticBoard();
    const png = await encodeFrame(raw, BW, BH, 3, 'png');
    const before =
      metricValue(await scrape(daemon.url), 'edge_scorer_frames_total', { defect: 'false' }) +
      metricValue(await scrape(daemon.url), 'edge_scorer_frames_total', { defect: 'true' });
    const a = await postFrame(`${daemon.url}/v1/score?layout=board-a`, png, 'image/png', {
      'x-frame-id': 'b1',
    });
    expect(a.status, a.text).toBe(200);
    const board = a.json as BoardAnswer;
    expect(board.layout).toBe('board-a');
    expect(board.board).toEqual({ width: BW, height: BH });
    expect(board.regions.map((r) => r.id)).toEqual(REGIONS.map((r) => r.id));

    for (const [k, region] of REGIONS.entries()) {
      const got = board.regions[k]!;
      // The crop alone: upright pixels of the region (for the turned one, the part as drawn).
      const want =
        region.angle === 90
          ? await scorePng(
              makeRaw(PART_W, PART_H, 3, (i, j) => partPx(i, j)),
              PART_W,
              PART_H,
            )
          : await scoreAlone(raw, region);
      expect(got.defect, region.id).toBe(want.defect);
      expect(
        got.classification!.map((c) => c.label),
        region.id,
      ).toEqual(want.classification.map((c) => c.label));
      got.classification!.forEach((c, i) => close(c.score, want.classification[i]!.score));
      expect(got.label).toBe(want.classification[0]!.label);
    }
    // The regions' answers differ: a layout that scored one crop everywhere would fail above too.
    expect(new Set(board.regions.map((r) => r.score!.toFixed(6))).size).toBeGreaterThan(3);
    expect(board.defectiveRegions).toEqual(board.regions.filter((r) => r.defect).map((r) => r.id));
    expect(board.defect).toBe(board.defectiveRegions.length > 0);

    // Metrics count regions: one frames_total step per region.
    const samples = await scrape(daemon.url);
    const after =
      metricValue(samples, 'edge_scorer_frames_total', { defect: 'false' }) +
      metricValue(samples, 'edge_scorer_frames_total', { defect: 'true' });
    expect(after - before).toBe(REGIONS.length + REGIONS.length); // board regions + the crops alone
  });

  it.each(['1', '2'])(
    'a board of many regions, cut in chunks by %s inference worker(s), answers as the crops alone',
    async (workers) => {
      // 48 upright regions: cut in chunks from the shared board by the inference workers (and, beside
      // a single worker, the event loop; a board of fewer than 16, as in the other tests, is cut on
      // the event loop alone), and compared with the crops posted alone.
      daemon = await startDaemon({ env: { WORKERS: workers, MAX_QUEUE: '512' } });
      const grid = Array.from({ length: 48 }, (_, i) => ({
        id: `g${i}`,
        x: (i % 8) * 40 + (i % 3),
        y: Math.floor(i / 8) * 40 + (i % 5),
        width: 36 - (i % 4) * 3,
        height: 30 + (i % 2) * 6,
      }));
      expect((await putLayout('grid', { regions: grid })).status).toBe(201);
      const raw = syntheticBoard();
      const a = await postFrame(
        `${daemon.url}/v1/score?layout=grid`,
        await encodeFrame(raw, BW, BH, 3, 'png'),
        'image/png',
      );
      expect(a.status, a.text).toBe(200);
      const board = a.json as BoardAnswer;
      expect(board.regions.map((r) => r.id)).toEqual(grid.map((r) => r.id));
      for (const [k, region] of grid.entries()) {
        const want = await scoreAlone(raw, region);
        const got = board.regions[k]!;
        expect(got.label, region.id).toBe(want.classification[0]!.label);
        got.classification!.forEach((c, i) => close(c.score, want.classification[i]!.score));
      }
      expect(new Set(board.regions.map((r) => r.score!.toFixed(6))).size).toBeGreaterThan(10);

      // Two boards of the same size taking turns, two at a time: the shared copy of a board
      // outlives none of its regions' jobs (a copy handed to the next board too early would mix
      // the two boards' pixels), nor does a worker's batch tensor carry one job into the next.
      const mirrored = await sharp(raw, { raw: { width: BW, height: BH, channels: 3 } })
        .flop()
        .png()
        .toBuffer();
      const bodies = [await encodeFrame(raw, BW, BH, 3, 'png'), mirrored];
      const scoresOf = (answer: Answer) => (answer.json as BoardAnswer).regions.map((r) => r.score!);
      const alone = [
        scoresOf(a),
        scoresOf(await postFrame(`${daemon.url}/v1/score?layout=grid`, mirrored, 'image/png')),
      ];
      expect(alone[1]).not.toEqual(alone[0]);
      const turns = await Promise.all(
        [0, 1, 0, 1, 0, 1].map((k) =>
          postFrame(`${daemon!.url}/v1/score?layout=grid`, bodies[k]!, 'image/png'),
        ),
      );
      turns.forEach((t, n) => {
        expect(t.status, t.text).toBe(200);
        scoresOf(t).forEach((score, i) => close(score, alone[n % 2]![i]!));
      });
    },
  );

  it('a turned region is cut upright: the part scores the same at 0°, 90°, 180° and 270°', async () => {
    daemon = await startDaemon();
    const part = makeRaw(PART_W, PART_H, 3, partPx);
    const alone = (
      await postFrame(
        `${daemon.url}/v1/score`,
        await encodeFrame(part, PART_W, PART_H, 3, 'png'),
        'image/png',
      )
    ).json as V1;
    for (const angle of [90, 180, 270, -90]) {
      // Turn the part clockwise with sharp onto a grey board and name the region by its upright size.
      const turned = await sharp(part, { raw: { width: PART_W, height: PART_H, channels: 3 } })
        .rotate(angle)
        .raw()
        .toBuffer({ resolveWithObject: true });
      const board = makeRaw(100, 80, 3, () => [90, 90, 90]);
      const left = 50 - turned.info.width / 2;
      const top = 40 - turned.info.height / 2;
      for (let y = 0; y < turned.info.height; y++)
        turned.data.copy(
          board,
          ((top + y) * 100 + left) * 3,
          y * turned.info.width * 3,
          (y + 1) * turned.info.width * 3,
        );
      const name = `turn${angle < 0 ? 'm' : ''}${Math.abs(angle)}`;
      expect(
        (
          await putLayout(name, {
            regions: [{ id: 'p', x: 35, y: 34, width: PART_W, height: PART_H, angle }],
          })
        ).status,
      ).toBe(201);
      const a = await postFrame(
        `${daemon.url}/v1/score?layout=${name}`,
        await encodeFrame(board, 100, 80, 3, 'png'),
        'image/png',
      );
      expect(a.status, a.text).toBe(200);
      const got = (a.json as BoardAnswer).regions[0]!;
      got.classification!.forEach((c, i) => {
        expect(c.label).toBe(alone.classification[i]!.label);
        close(c.score, alone.classification[i]!.score);
      });
    }
  });

  it('detections come back in board pixels, within one pixel', async () => {
    // Model input 64×64, stretch; one box centred at model (32, 16), 16 × 8: a 128 × 64 region is
    // scaled by 0.5 across and 1 down, so the box is (48, 12) 32 × 8 of the crop.
    const detector = buildYoloV8Detector({
      batch: 'dynamic',
      height: 64,
      width: 64,
      classes: 2,
      predictions: [{ cx: 32, cy: 16, w: 16, h: 8, scores: [0.9, 0.05] }],
    });
    daemon = await startDaemon({
      model: detector,
      manifest: {
        name: 'det',
        version: '1',
        task: 'detection',
        labels: ['bridge', 'missing'],
        defectLabels: ['bridge'],
        input: { width: 64, height: 64, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
        output: { format: 'yolov8', scoreThreshold: 0.25, iouThreshold: 0.45 },
      },
    });
    const regions = [
      { id: 'a', x: 10, y: 20, width: 128, height: 64 },
      { id: 'b', x: 150, y: 100, width: 128, height: 64 },
      // Turned 90° clockwise about its centre (150 + 64, 80 + 32) = (214, 112).
      { id: 'c', x: 150, y: 80, width: 128, height: 64, angle: 90 },
    ];
    expect((await putLayout('det', { regions })).status).toBe(201);
    const board = makeRaw(BW, BH, 3, () => [120, 120, 120]);
    const a = await postFrame(
      `${daemon.url}/v1/score?layout=det`,
      await encodeFrame(board, BW, BH, 3, 'png'),
      'image/png',
    );
    expect(a.status, a.text).toBe(200);
    const got = (a.json as BoardAnswer).regions;
    const boxOf = (r: RegionAnswer): number[] => {
      const b = r.detections![0]!.box;
      return [b.x, b.y, b.width, b.height];
    };
    const within1 = (actual: number[], want: number[]): void =>
      actual.forEach((v, i) =>
        expect(
          Math.abs(v - want[i]!),
          `${JSON.stringify(actual)} vs ${JSON.stringify(want)}`,
        ).toBeLessThanOrEqual(1),
      );
    within1(boxOf(got[0]!), [10 + 48, 20 + 12, 32, 8]);
    within1(boxOf(got[1]!), [150 + 48, 100 + 12, 32, 8]);
    // Crop box corners relative to the crop's centre (64, 32): x −16..16, y −20..−12; turned
    // clockwise, (dx, dy) → (−dy, dx): x 12..20, y −16..16 around (214, 112).
    within1(boxOf(got[2]!), [226, 96, 8, 32]);
    expect((a.json as BoardAnswer).defectiveRegions).toEqual(['a', 'b', 'c']);
  });

  it('bad layouts and regions get their codes and change nothing', async () => {
    daemon = await startDaemon({ env: { MAX_REGIONS: '4' } });
    const png = await encodeFrame(makeRaw(BW, BH, 3, boardPx), BW, BH, 3, 'png');
    const expectError = (a: Answer, status: number, code: string): void => {
      expect(a.status, a.text).toBe(status);
      expect(a.json).toMatchObject({ error: { code } });
    };
    expectError(await putLayout('empty', { regions: [] }), 400, 'EDGE_ERR_LAYOUT_INVALID');
    expectError(
      await putLayout('bad', { regions: [{ id: 'a', x: -1, y: 0, width: 4, height: 4 }] }),
      400,
      'EDGE_ERR_LAYOUT_INVALID',
    );
    expectError(
      await putLayout('dup', {
        regions: [
          { id: 'a', x: 0, y: 0, width: 4, height: 4 },
          { id: 'a', x: 1, y: 0, width: 4, height: 4 },
        ],
      }),
      400,
      'EDGE_ERR_LAYOUT_INVALID',
    );
    expectError(
      await putLayout('bad..name$', { regions: [{ id: 'a', x: 0, y: 0, width: 4, height: 4 }] }),
      400,
      'EDGE_ERR_LAYOUT_INVALID',
    );
    const five = Array.from({ length: 5 }, (_, i) => ({ id: `r${i}`, x: i, y: 0, width: 4, height: 4 }));
    expectError(await putLayout('big', { regions: five }), 413, 'EDGE_ERR_TOO_MANY_REGIONS');
    expect((await request(`${daemon.url}/v1/layouts`)).json).toEqual({ layouts: [] });

    expectError(
      await postFrame(`${daemon.url}/v1/score?layout=nope`, png, 'image/png'),
      404,
      'EDGE_ERR_LAYOUT_NOT_FOUND',
    );
    // Inside the frame upright, outside once turned by 90° (60 × 10 about (30, 10) reaches y −20).
    expect(
      (
        await putLayout('out', {
          regions: [
            { id: 'ok', x: 0, y: 0, width: 10, height: 10 },
            { id: 'far', x: 0, y: 5, width: 60, height: 10, angle: 90 },
          ],
        })
      ).status,
    ).toBe(201);
    expectError(
      await postFrame(`${daemon.url}/v1/score?layout=out`, png, 'image/png'),
      422,
      'EDGE_ERR_REGION_OUT_OF_FRAME',
    );
    expect(
      (await putLayout('past', { regions: [{ id: 'x', x: BW - 5, y: 0, width: 6, height: 4 }] })).status,
    ).toBe(201);
    expectError(
      await postFrame(`${daemon.url}/v1/score?layout=past`, png, 'image/png'),
      422,
      'EDGE_ERR_REGION_OUT_OF_FRAME',
    );
    // Nothing was left admitted: the queue is empty and the next board scores.
    expect(metricValue(await scrape(daemon.url), 'edge_scorer_queue_depth')).toBe(0);
    expect(
      (await putLayout('good', { regions: [{ id: 'g', x: 0, y: 0, width: 10, height: 10 }] })).status,
    ).toBe(201);
    const ok = await postFrame(`${daemon.url}/v1/score?layout=good`, png, 'image/png');
    expect(ok.status, ok.text).toBe(200);
  });

  it('ad-hoc regions in multipart/form-data answer as the same regions in a layout; bad parts get codes', async () => {
    daemon = await startDaemon();
    const d = daemon;
    expect((await putLayout('board-a', { regions: REGIONS })).status).toBe(201);
    const png = await encodeFrame(syntheticBoard(), BW, BH, 3, 'png');
    const byLayout = (await postFrame(`${d.url}/v1/score?layout=board-a`, png, 'image/png'))
      .json as BoardAnswer;

    const multipart = async (
      parts: { name: string; value: Blob | string; filename?: string }[],
      path = '/v1/score',
    ): Promise<Answer> => {
      const form = new FormData();
      for (const p of parts)
        if (typeof p.value === 'string') form.append(p.name, p.value);
        else form.append(p.name, p.value, p.filename ?? 'frame');
      return request(`${d.url}${path}`, { method: 'POST', body: form, headers: { 'x-frame-id': 'adhoc-1' } });
    };
    const frame = { name: 'frame', value: new Blob([png], { type: 'image/png' }), filename: 'board.png' };
    const a = await multipart([frame, { name: 'regions', value: JSON.stringify(REGIONS) }]);
    expect(a.status, a.text).toBe(200);
    const adhoc = a.json as BoardAnswer & { frameId: string };
    expect(adhoc.frameId).toBe('adhoc-1');
    expect(adhoc.layout).toBeNull();
    expect(adhoc.board).toEqual({ width: BW, height: BH });
    expect(adhoc.regions.map((r) => [r.id, r.label, r.defect])).toEqual(
      byLayout.regions.map((r) => [r.id, r.label, r.defect]),
    );
    adhoc.regions.forEach((r, k) => close(r.score!, byLayout.regions[k]!.score!));
    expect(adhoc.defectiveRegions).toEqual(byLayout.defectiveRegions);
    // `{"regions": [...]}` works as well, and the AVA route answers entities per region.
    const wrapped = await multipart(
      [frame, { name: 'regions', value: JSON.stringify({ regions: REGIONS }) }],
      '/score',
    );
    expect(wrapped.status, wrapped.text).toBe(200);
    expect((wrapped.json as { inferences: unknown[] }).inferences.length).toBeGreaterThanOrEqual(
      REGIONS.length,
    );

    const bad: [string, { name: string; value: Blob | string; filename?: string }[], number, string][] = [
      ['no regions part', [frame], 400, 'EDGE_ERR_BAD_REQUEST'],
      ['no frame part', [{ name: 'regions', value: JSON.stringify(REGIONS) }], 400, 'EDGE_ERR_BAD_REQUEST'],
      ['regions not JSON', [frame, { name: 'regions', value: '[{' }], 400, 'EDGE_ERR_BAD_REQUEST'],
      [
        'an unknown part',
        [frame, { name: 'regions', value: '[]' }, { name: 'notes', value: 'x' }],
        400,
        'EDGE_ERR_BAD_REQUEST',
      ],
      ['an empty region list', [frame, { name: 'regions', value: '[]' }], 400, 'EDGE_ERR_LAYOUT_INVALID'],
      [
        'a region outside the frame',
        [
          frame,
          { name: 'regions', value: JSON.stringify([{ id: 'far', x: 310, y: 0, width: 40, height: 10 }]) },
        ],
        422,
        'EDGE_ERR_REGION_OUT_OF_FRAME',
      ],
      [
        'an SVG frame part',
        [
          { name: 'frame', value: new Blob(['<svg/>'], { type: 'image/svg+xml' }) },
          { name: 'regions', value: JSON.stringify(REGIONS) },
        ],
        415,
        'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
      ],
    ];
    for (const [what, parts, status, code] of bad) {
      const r = await multipart(parts);
      expect(r.status, `${what}: ${r.text}`).toBe(status);
      expect(r.json, what).toMatchObject({ error: { code } });
    }
    // A layout and ad-hoc regions at once is refused.
    const both = await multipart(
      [frame, { name: 'regions', value: JSON.stringify(REGIONS) }],
      '/v1/score?layout=board-a',
    );
    expect(both.status).toBe(400);
    // And the daemon still scores.
    expect((await postFrame(`${d.url}/v1/score?layout=board-a`, png, 'image/png')).status).toBe(200);
  });

  it('layouts survive a restart (kept under DATA_DIR)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-layouts-'));
    try {
      daemon = await startDaemon({ dir });
      const first = [{ id: 'k', x: 1, y: 2, width: 3, height: 4, ref: 'R9' }];
      const second = [{ id: 'k', x: 1, y: 2, width: 5, height: 4, ref: 'R9' }];
      expect((await putLayout('keep', { regions: first })).status).toBe(201);
      expect((await putLayout('keep', { regions: second })).status).toBe(200);
      await daemon.stop();
      daemon = await startDaemon({ dir });
      const got = await request(`${daemon.url}/v1/layouts/keep`);
      expect(got.status, got.text).toBe(200);
      expect(got.json).toEqual({ name: 'keep', regions: second });
      await daemon.stop();
    } finally {
      daemon = undefined;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
