import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { anomalyMap, buildAnomalibModel } from '../helpers/model-families.js';

/** anomalib exports through the whole HTTP path (docs/model-families.md, "Anomaly detection"). */

let daemon: Daemon | undefined;
let dir: string | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

interface Region {
  box: { x: number; y: number; width: number; height: number };
  area: number;
  peak: number;
}
interface V1 {
  task: string;
  defect: boolean;
  anomaly: {
    score: number;
    threshold: number;
    regions: Region[];
    map?: { width: number; height: number; contentType: string; data: string };
  };
}

const MAP = anomalyMap([
  [1, 1, 0.8],
  [2, 1, 0.9],
  [2, 2, 0.7],
  [6, 5, 0.6],
  [5, 6, 0.55],
]);

const frame = () => encodeFrame(solidFrame(64, 48, 3, 90), 64, 48, 3, 'png');

describe('anomalib 2.x, recognised by its output names alone', () => {
  it('answers score, defect and regions in frame pixels; the map as PNG on ?include=map; /score too', async () => {
    daemon = await startDaemon({
      model: buildAnomalibModel({ score: 0.73, map: MAP }),
      manifest: { name: 'patchcore' },
    });
    const body = await frame();
    const plain = await postFrame(`${daemon.url}/v1/score`, body, 'image/png');
    expect(plain.status).toBe(200);
    const a = plain.json as V1;
    expect(a.task).toBe('anomaly');
    expect(a.defect).toBe(true);
    expect(a.anomaly.score).toBeCloseTo(0.73, 6);
    expect(a.anomaly.map).toBeUndefined();
    expect(a.anomaly.regions.map((r) => [r.box, r.area])).toEqual([
      [{ x: 8, y: 6, width: 16, height: 12 }, 144],
      [{ x: 40, y: 30, width: 16, height: 12 }, 96],
    ]);

    const withMap = (await postFrame(`${daemon.url}/v1/score?include=map`, body, 'image/png')).json as V1;
    expect(withMap.anomaly.map).toMatchObject({ width: 8, height: 8, contentType: 'image/png' });
    const pngBytes = Buffer.from(withMap.anomaly.map!.data, 'base64');
    expect(await sharp(pngBytes).metadata()).toMatchObject({
      format: 'png',
      width: 8,
      height: 8,
      channels: 1,
    });
    const png = await sharp(pngBytes).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
    expect(png.data[1 * 8 + 2]).toBe(Math.round(Math.fround(0.9) * 255));
    expect(png.data[0]).toBe(Math.round(Math.fround(0.1) * 255));

    const ava = (await postFrame(`${daemon.url}/score`, body, 'image/png')).json as {
      inferences: { type: string; classification?: { tag: { value: string } }; entity?: { box: object } }[];
    };
    expect(ava.inferences.map((i) => i.type)).toEqual(['classification', 'entity', 'entity']);
    expect(ava.inferences[0]!.classification!.tag.value).toBe('anomalous');
    expect(ava.inferences[1]!.entity!.box).toEqual({ l: 0.125, t: 0.125, w: 0.25, h: 0.25 });
  });

  it('the manifest threshold overrides the trained one; an unknown include is a 400 that changes nothing', async () => {
    daemon = await startDaemon({
      model: buildAnomalibModel({ score: 0.73, map: MAP }),
      manifest: { output: { anomalyThreshold: 0.85 } },
    });
    const body = await frame();
    const bad = await postFrame(`${daemon.url}/v1/score?include=heatmap`, body, 'image/png');
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ error: { code: 'EDGE_ERR_BAD_REQUEST' } });
    const a = (await postFrame(`${daemon.url}/v1/score`, body, 'image/png')).json as V1;
    expect(a.defect).toBe(false);
    expect(a.anomaly.threshold).toBe(0.85);
    expect(a.anomaly.regions.map((r) => r.box)).toEqual([{ x: 16, y: 6, width: 8, height: 6 }]);
  });
});

describe('anomalib 1.x with metadata.json', () => {
  it('normalises the raw score and map with the thresholds and min/max', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-anomalib-'));
    await mkdir(path.join(dir, 'model'), { recursive: true });
    await writeFile(
      path.join(dir, 'model', 'metadata.json'),
      JSON.stringify({ image_threshold: 12, pixel_threshold: 10, min: 2, max: 22 }),
    );
    const raw = anomalyMap([[3, 3, 18]], 8, 2);
    daemon = await startDaemon({ dir, model: buildAnomalibModel({ score: 9, map: raw }) });
    const a = (await postFrame(`${daemon.url}/v1/score`, await frame(), 'image/png')).json as V1;
    expect(a.anomaly.score).toBeCloseTo(0.35, 6); // (9 − 12) / 20 + 0.5
    expect(a.defect).toBe(false);
    expect(a.anomaly.regions.map((r) => [r.box, r.area])).toEqual([
      [{ x: 24, y: 18, width: 8, height: 6 }, 48],
    ]);
    expect(a.anomaly.regions[0]!.peak).toBeCloseTo(0.9, 6); // (18 − 10) / 20 + 0.5
  });
});

describe('bad combinations are refused at load', () => {
  it('an anomaly model declared as a detector: EDGE_ERR_MODEL_SHAPE_MISMATCH, not ready', async () => {
    daemon = await startDaemon({
      model: buildAnomalibModel({ score: 0.73, map: MAP }),
      manifest: { task: 'detection', labels: ['defect'], output: { format: 'yolov8' } },
    });
    expect((await request(`${daemon.url}/v2/health/ready`)).status).toBe(503);
    expect((await request(`${daemon.url}/v1/model`)).json).toMatchObject({
      status: 'failed',
      lastError: { code: 'EDGE_ERR_MODEL_SHAPE_MISMATCH' },
    });
  });
});
