import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CaptureRules } from '../../src/capture/rules.js';
import { effectiveCapture } from '../../src/capture/settings.js';
import { decodeRaw } from '../../src/scoring/pixel-formats/index.js';
import { captureService, jpegFrame, scored, stopCaptureServices } from '../helpers/captures.js';

afterEach(() => stopCaptureServices());

const ALL = [
  { reason: 'defect' as const, rate: 1 },
  { reason: 'uncertain' as const, scoreBand: [0.3, 0.7] as [number, number], rate: 1 },
  { reason: 'sample' as const, rate: 1 },
];

describe('capture rules', () => {
  it('takes defects, uncertain frames and samples in value order, each at its rate', () => {
    const rules = new CaptureRules(() => 0.5);
    const s = effectiveCapture({ enabled: true, rules: [...ALL].reverse() });
    const body = Buffer.alloc(1);
    expect(rules.decide(scored(body, { defect: true, top: 0.5 }), s)).toMatchObject({
      take: true,
      reason: 'defect',
    });
    expect(rules.decide(scored(body, { top: 0.5 }), s)).toMatchObject({ take: true, reason: 'uncertain' });
    expect(rules.decide(scored(body, { top: 0.9 }), s)).toMatchObject({ take: true, reason: 'sample' });
    // A rate below the draw skips the rule; with no other rule matching, nothing is taken.
    const rare = effectiveCapture({ enabled: true, rules: [{ reason: 'sample', rate: 0.4 }] });
    expect(rules.decide(scored(body), rare)).toEqual({ take: false });
    // Detections count for "uncertain" too: any score in the band.
    const det = {
      ...scored(body),
      prediction: {
        defect: false,
        detections: [
          { label: 'bridge', score: 0.9 },
          { label: 'shift', score: 0.4 },
        ],
      },
    };
    expect(rules.decide(det, effectiveCapture({ enabled: true, rules: [ALL[1]!] }))).toMatchObject({
      reason: 'uncertain',
    });
  });

  it('holds the hourly quotas per camera and per label, and starts afresh the next hour', () => {
    const rules = new CaptureRules(() => 0);
    const s = effectiveCapture({ enabled: true, rules: ALL, perCameraPerHour: 3, perLabelPerHour: 4 });
    const body = Buffer.alloc(1);
    const t = Date.UTC(2026, 0, 1, 10, 5);
    const take = (camera: string, label: string, now = t) =>
      rules.decide(scored(body, { cameraId: camera, label, defect: true }), s, now);
    expect([1, 2, 3, 4].map(() => take('a', 'bridge').take)).toEqual([true, true, true, false]);
    expect(take('a', 'bridge')).toMatchObject({ skipped: 'quota-camera' });
    expect(take('b', 'bridge').take).toBe(true);
    expect(take('c', 'bridge')).toMatchObject({ skipped: 'quota-label' });
    expect(take('c', 'missing').take).toBe(true);
    expect(take('a', 'bridge', t + 3_600_000).take).toBe(true);
  });
});

describe('capture store', () => {
  it('stores the frame as posted and a sidecar with the answer, model and rule', async () => {
    const { service, dir } = await captureService();
    await service.setSettings({ enabled: true, rules: [ALL[0]!] });
    const body = await jpegFrame(1);
    await service.handle(scored(body, { defect: true, frameId: 'frame-1', cameraId: 'cam-7' }));
    const [r] = [...service.store.records()];
    expect(r).toMatchObject({
      frameId: 'frame-1',
      cameraId: 'cam-7',
      reason: 'defect',
      rule: { reason: 'defect', rate: 1 },
      model: { name: 'pcb-aoi', version: '7', sha256: 'a'.repeat(64) },
      answer: { defect: true, classification: [{ label: 'bridge', score: 0.95 }, { label: 'missing' }] },
      frame: { mediaType: 'image/jpeg', ext: 'jpg', bytes: body.length },
      label: null,
      upload: { state: 'pending' },
    });
    expect(await readFile(path.join(dir, `${r!.id}.jpg`))).toEqual(body);
    expect(JSON.parse(await readFile(path.join(dir, `${r!.id}.json`), 'utf8'))).toEqual(r);
  });

  it('stores raw camera buffers losslessly as PNG (bgr8 in RGB order)', async () => {
    const { service } = await captureService();
    await service.setSettings({ enabled: true, rules: [ALL[2]!] });
    const w = 7;
    const h = 5;
    const bgr = Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 37) & 0xff));
    const f = scored(bgr);
    f.frame = {
      body: bgr,
      mediaType: 'application/octet-stream',
      raw: { format: 'bgr8', width: w, height: h },
    };
    await service.handle(f);
    const [r] = [...service.store.records()];
    expect(r!.frame).toMatchObject({ mediaType: 'image/png', raw: { format: 'bgr8', width: w, height: h } });
    const { default: sharp } = await import('sharp');
    const png = await service.store.readFrame(r!.id);
    const back = await sharp(png).raw().toBuffer();
    const rgb = Buffer.alloc(bgr.length);
    for (let i = 0; i < bgr.length; i += 3)
      [rgb[i], rgb[i + 1], rgb[i + 2]] = [bgr[i + 2]!, bgr[i + 1]!, bgr[i]!];
    expect(back).toEqual(rgb);
  });

  it('keeps the sensor values of 12- and 16-bit frames; Bayer and YUV as the RGB the model saw', async () => {
    const { service } = await captureService();
    await service.setSettings({ enabled: true, rules: [ALL[2]!] });
    const { default: sharp } = await import('sharp');
    const w = 6;
    const h = 4;
    const n = w * h;
    const values12 = Array.from({ length: n }, (_, i) => (i * 173 + 5) & 0xfff);
    const mono16 = Buffer.alloc(2 * n);
    values12.forEach((v, i) => mono16.writeUInt16LE(v, 2 * i));
    // Mono12p: two pixels in three bytes, least significant bits first.
    const mono12p = Buffer.alloc((n * 3) / 2);
    for (let i = 0, p = 0; i < n; i += 2, p += 3) {
      const [a, b] = [values12[i]!, values12[i + 1]!];
      mono12p[p] = a & 0xff;
      mono12p[p + 1] = (a >> 8) | ((b & 0x0f) << 4);
      mono12p[p + 2] = b >> 4;
    }
    const mosaic = Buffer.from(Array.from({ length: n }, (_, i) => (i * 41) & 0xff));
    const yuyv = Buffer.from(Array.from({ length: 2 * n }, (_, i) => (i * 29 + 3) & 0xff));
    const cases = [
      { format: 'mono16', bits: 12, body: mono16 },
      { format: 'mono12p', body: mono12p },
      { format: 'bayer_rg8', body: mosaic },
      { format: 'yuv422_yuyv', body: yuyv },
    ];
    for (const [i, c] of cases.entries()) {
      const f = scored(c.body, { frameId: `raw-${i}` });
      f.frame = {
        body: c.body,
        mediaType: 'application/octet-stream',
        raw: { format: c.format, width: w, height: h, ...(c.bits ? { bits: c.bits } : {}) },
      };
      await service.handle(f);
    }
    const byFrame = new Map([...service.store.records()].map((r) => [r.frameId, r]));
    const stored = async (i: number): Promise<{ data: Buffer; info: { width: number; depth: string } }> => {
      const png = await service.store.readFrame(byFrame.get(`raw-${i}`)!.id);
      const meta = await sharp(png).metadata();
      const depth = meta.depth === 'ushort' ? 'ushort' : 'uchar';
      const img = sharp(png);
      const { data, info } = await img
        .toColourspace(depth === 'ushort' ? 'grey16' : 'b-w')
        .raw({ depth })
        .toBuffer({ resolveWithObject: true });
      return { data, info: { width: info.width, depth } };
    };
    const u16 = (b: Buffer): number[] => [...new Uint16Array(b.buffer, b.byteOffset, b.length / 2)];
    for (const i of [0, 1]) {
      const s = await stored(i);
      expect(s.info).toEqual({ width: w, depth: 'ushort' });
      expect(u16(s.data), cases[i]!.format).toEqual(values12);
    }
    // Bayer and YUV: exactly the RGB pixels scoring decoded for the model.
    for (const i of [2, 3]) {
      const c = cases[i]!;
      const png = (await service.store.readFrame(byFrame.get(`raw-${i}`)!.id))!;
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.channels]).toEqual([w, 3]);
      expect(data, c.format).toEqual(decodeRaw(c.body, { format: c.format, width: w, height: h }).data);
    }
    expect(byFrame.get('raw-0')!.frame).toMatchObject({ raw: { format: 'mono16', width: w, height: h } });
    // Grey PNGs (colour type 0), 16-bit where the sensor values need it: nothing is stored bigger.
    for (const [i, depth, colour] of [
      [0, 16, 0],
      [1, 16, 0],
      [2, 8, 2],
      [3, 8, 2],
    ] as const) {
      const png = (await service.store.readFrame(byFrame.get(`raw-${i}`)!.id))!;
      expect([png[24], png[25]], cases[i]!.format).toEqual([depth, colour]);
    }
  });

  it('never lists a half capture left by a crash, and removes it', async () => {
    const first = await captureService();
    await first.service.setSettings({ enabled: true, rules: [ALL[0]!] });
    await first.service.handle(scored(await jpegFrame(2), { defect: true }));
    const dir = first.dir;
    // What a crash can leave: a temporary file, a frame without its sidecar, a sidecar whose
    // frame an interrupted eviction already removed... (the store removes the sidecar first, so
    // this last one is a sidecar pointing at a short frame).
    await mkdir(path.join(dir, '.tmp'), { recursive: true });
    await writeFile(path.join(dir, '.tmp', 'x.jpg.1234'), 'partial');
    await writeFile(path.join(dir, '00000000a-0000000a.jpg'), 'orphan');
    const good = [...first.service.store.records()][0]!;
    const half = {
      ...good,
      id: '00000000b-0000000b',
      frame: { ...good.frame, file: '00000000b-0000000b.jpg' },
    };
    await writeFile(path.join(dir, '00000000b-0000000b.json'), JSON.stringify(half));
    await writeFile(path.join(dir, '00000000b-0000000b.jpg'), 'short');
    const again = await captureService({ dir });
    expect([...again.service.store.records()].map((r) => r.id)).toEqual([good.id]);
    expect((await readdir(dir)).sort()).toEqual(['.tmp', `${good.id}.jpg`, `${good.id}.json`].sort());
    expect(await readdir(path.join(dir, '.tmp'))).toEqual([]);
  });

  it('under a flood of defects from four cameras holds quotas and the budget, evicting by value', async () => {
    const { service, registry } = await captureService();
    await service.setSettings({
      enabled: true,
      rules: ALL,
      perCameraPerHour: 10,
      perLabelPerHour: 1000,
      maxItems: 20,
    });
    for (let i = 0; i < 10; i++)
      await service.handle(scored(await jpegFrame(i), { cameraId: 'cam-0', top: 0.9 }));
    for (let i = 0; i < 10; i++)
      await service.handle(scored(await jpegFrame(i), { cameraId: 'cam-9', top: 0.5 }));
    // The oldest sample gets a human label: it must outlive every unlabelled capture.
    const labelled = [...service.store.records()].find((r) => r.reason === 'sample')!;
    await service.label(labelled.id, { verdict: 'ok', at: new Date().toISOString() });
    for (let i = 0; i < 48; i++) {
      const cam = `cam-${(i % 4) + 1}`;
      await service.handle(
        scored(await jpegFrame(100 + i), { cameraId: cam, defect: true, frameId: `d${i}` }),
      );
      expect(service.store.count).toBeLessThanOrEqual(20);
    }
    const left = [...service.store.records()];
    const perCamera = new Map<string, number>();
    for (const r of left) perCamera.set(r.cameraId!, (perCamera.get(r.cameraId!) ?? 0) + 1);
    // 40 defects taken (10 per camera), the newest 19 kept beside the labelled sample.
    expect(left.map((r) => r.id)).toContain(labelled.id);
    expect(left.filter((r) => r.reason === 'defect').map((r) => r.frameId)).toEqual(
      Array.from({ length: 48 }, (_, i) => i)
        .filter((i) => Math.floor(i / 4) < 10)
        .map((i) => `d${i}`)
        .slice(-19),
    );
    const text = await registry.metrics();
    expect(text).toMatch(/edge_scorer_capture_skipped_total\{reason="defect",why="quota-camera"\} 8/);
    expect(text).toMatch(/edge_scorer_capture_evictions_total\{reason="sample",uploaded="false"\} 9/);
    expect(text).toMatch(/edge_scorer_capture_evictions_total\{reason="uncertain",uploaded="false"\} 10/);
    expect(text).toMatch(/edge_scorer_capture_evictions_total\{reason="defect",uploaded="false"\} 21/);
  });

  it('keeps the byte budget and refuses a capture worth less than everything stored', async () => {
    const { service, registry } = await captureService();
    const evictions = async (): Promise<number> =>
      Number(
        /evictions_total\{reason="defect",uploaded="false"\} (\d+)/.exec(await registry.metrics())?.[1] ?? 0,
      );
    const body = await jpegFrame(3, 160);
    await service.setSettings({ enabled: true, rules: ALL, maxBytes: 1_048_576, perCameraPerHour: 10_000 });
    // Defects until the budget is full and the oldest start to go.
    for (let i = 0; (await evictions()) < 5; i++) {
      await service.handle(scored(body, { defect: true, label: `l${i % 9}` }));
      expect(service.store.bytes).toBeLessThanOrEqual(1_048_576);
    }
    const before = service.store.count;
    await service.handle(scored(body, { top: 0.95 })); // a sample: worth less than any defect
    expect(service.store.count).toBe(before);
    expect(await registry.metrics()).toMatch(/skipped_total\{reason="sample",why="budget"\} 1/);
    expect([...service.store.records()].every((r) => r.reason === 'defect')).toBe(true);
    // Lowering the budget applies at once.
    await service.setSettings({ enabled: true, rules: ALL, maxItems: 3 });
    expect(service.store.count).toBe(3);
  });
});
