import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import sharp, { type OutputInfo } from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { demoModel } from '../helpers/console.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { anomalyMap, buildAnomalibModel } from '../helpers/model-families.js';
import { launchChromium } from '../helpers/browser.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { postFrame, request } from '../helpers/http.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';

/**
 * The operator console in a real browser (Debian's chromium) against a real daemon: what an
 * operator sees, checked on the screen's pixels where it matters, and that the page asks nothing
 * of any origin but the daemon's.
 */

let browser: Browser;
let daemon: Daemon | undefined;
let page: Page | undefined;
/** Every URL the page requested, and requests the browser could not even send. */
let requested: string[] = [];
const demo = await demoModel();

beforeAll(async () => {
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

afterEach(async () => {
  await page?.close();
  page = undefined;
  await daemon?.stop();
  daemon = undefined;
  // Whatever the test did, the page never reached outside the daemon's origin.
  expect(requested.length).toBeGreaterThan(0);
  expect(requested.filter((u) => !u.startsWith(origin))).toEqual([]);
  expect(pageErrors).toEqual([]);
});

let origin = '';
/** Script errors and CSP violations the page reported. */
let pageErrors: string[] = [];

async function open(d: Daemon, hash: string): Promise<Page> {
  origin = new URL(d.url).origin;
  requested = [];
  pageErrors = [];
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.on('request', (r) => requested.push(r.url()));
  const errors = pageErrors;
  p.on('pageerror', (e) => errors.push(e.message));
  p.on('console', (m) => {
    // A CSP violation is reported on the console: the page must not cause any.
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) errors.push(m.text());
  });
  await p.goto(`${d.url}/${hash}`);
  return p;
}

/** RGB of the screenshot's pixel (x, y). */
function pixel(png: { data: Buffer; info: OutputInfo }, x: number, y: number): [number, number, number] {
  const i = (Math.round(y) * png.info.width + Math.round(x)) * png.info.channels;
  return [png.data[i]!, png.data[i + 1]!, png.data[i + 2]!];
}

const isRed = ([r, g, b]: [number, number, number]): boolean => r > 180 && g < 90 && b < 90;

describe('operator console in a browser', () => {
  it('live view: a posted demo frame appears with its box drawn, and the defect tile is highlighted', async () => {
    daemon = await startDaemon({ model: demo.model, manifest: demo.manifest });
    page = await open(daemon, '#live');
    await page.getByText('live', { exact: true }).waitFor();
    const answer = await postFrame(`${daemon.url}/v1/score`, demo.bridge, 'image/jpeg', {
      'x-camera-id': 'line-1',
      'x-frame-id': 'bridge-1',
    });
    const scored = answer.json as {
      detections: { box: { x: number; y: number; width: number; height: number } }[];
    };
    expect(scored.detections.length).toBeGreaterThan(0);
    const tile = page.locator('figure.tile[data-camera="line-1"][data-frame-id="bridge-1"]');
    await tile.waitFor();
    expect(await tile.getAttribute('class')).toContain('defect');
    const canvas = tile.locator('canvas');
    const shot = await sharp(await canvas.screenshot())
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const { width: frameWidth } = await sharp(demo.bridge).metadata();
    const k = shot.info.width / frameWidth;
    const { box } = scored.detections[0]!;
    // Along the box's left and bottom edges the screen is the box's red; in the frame itself it is not.
    const edge: [number, number][] = [];
    for (let f = 0.2; f <= 0.8; f += 0.1) {
      edge.push([box.x * k, (box.y + f * box.height) * k]);
      edge.push([(box.x + f * box.width) * k, (box.y + box.height) * k]);
    }
    expect(edge.filter(([x, y]) => isRed(pixel(shot, x, y)))).toHaveLength(edge.length);
    const plain = await sharp(demo.bridge)
      .resize(shot.info.width, shot.info.height)
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(edge.filter(([x, y]) => isRed(pixel(plain, x, y)))).toHaveLength(0);
    await expect(tile.locator('figcaption').textContent()).resolves.toContain(
      `line-1 · DEFECT · ${scored.detections.length} detections · aoi-solder-bridge-demo 1`,
    );
  });

  it("live view: an anomaly model's map is drawn as heat over the frame, with its regions and score", async () => {
    // Hot cells at (1,1), (2,1), (2,2) and (6,5), (5,6) of an 8×8 map; the rest reads 0.1.
    daemon = await startDaemon({
      model: buildAnomalibModel({
        score: 0.73,
        map: anomalyMap([
          [1, 1, 0.8],
          [2, 1, 0.9],
          [2, 2, 0.7],
          [6, 5, 0.6],
          [5, 6, 0.55],
        ]),
      }),
      manifest: { name: 'patchcore' },
    });
    page = await open(daemon, '#live');
    await page.getByText('live', { exact: true }).waitFor();
    const body = await encodeFrame(solidFrame(320, 240, 3, 90), 320, 240, 3, 'png');
    const answer = await postFrame(`${daemon.url}/v1/score`, body, 'image/png', {
      'x-camera-id': 'line-2',
      'x-frame-id': 'solder-1',
    });
    expect((answer.json as { defect: boolean }).defect).toBe(true);
    const tile = page.locator('figure.tile[data-camera="line-2"][data-frame-id="solder-1"]');
    await tile.waitFor();
    await expect(tile.locator('figcaption').textContent()).resolves.toContain(
      'anomaly 0.73 / 0.50, 2 regions',
    );
    const shot = await sharp(await tile.locator('canvas').screenshot())
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const k = shot.info.width / 320;
    // The stretch-resized map covers the frame: cell (x, y) is 40 × 30 frame pixels.
    const centre = (cx: number, cy: number): [number, number, number] =>
      pixel(shot, (cx + 0.5) * 40 * k, (cy + 0.5) * 30 * k);
    const redness = ([r, g]: [number, number, number]): number => r - g;
    // Hot cells are red on the screen, cold ones stay the frame's grey.
    for (const [cx, cy] of [
      [2, 1],
      [1, 1],
      [6, 5],
    ] as const)
      expect(redness(centre(cx, cy)), `cell ${cx},${cy}`).toBeGreaterThan(60);
    for (const [cx, cy] of [
      [6, 1],
      [1, 6],
      [4, 3],
    ] as const)
      expect(Math.abs(redness(centre(cx, cy))), `cell ${cx},${cy}`).toBeLessThan(35);
    // The region around the first three cells is outlined in the defect red along its left edge.
    const edge = [0.3, 0.5, 0.7].map((f) => pixel(shot, 40 * k + 1, (30 + f * 60) * k));
    expect(edge.filter(isRed)).toHaveLength(edge.length);
  });

  it('model view: a swap made through the desired file shows as the active model and in the history', async () => {
    const server: ModelServer = await startModelServer();
    const desiredFile = path.join(tmpdir(), `edge-scorer-console-desired-${process.pid}-${Date.now()}.json`);
    try {
      daemon = await startDaemon({
        model: demo.model,
        manifest: demo.manifest,
        env: {
          DESIRED_PROPERTIES_FILE: desiredFile,
          DESIRED_PROPERTIES_POLL_MS: '200',
          MODEL_URL_ALLOWLIST: `${server.origin}/`,
          REPORTED_MIN_INTERVAL_MS: '0',
        },
      });
      page = await open(daemon, '#model');
      const active = page.locator('#active-model');
      await expect.poll(() => active.textContent()).toContain('aoi-solder-bridge-demo');
      const v7 = versionedModel('7');
      await writeFile(desiredFile, JSON.stringify({ model: desiredModel(server, v7) }));
      await expect.poll(() => active.textContent(), { timeout: 20_000 }).toContain('line-classifier');
      const text = (await active.textContent()) ?? '';
      expect(text).toContain(v7.sha256);
      expect(text).toMatch(/version\s*7/);
      const history = page.locator('#model-history');
      await expect.poll(() => history.textContent()).toMatch(/activated\s*line-classifier 7\s*1\s*ok/);
      await expect.poll(() => page!.locator('.twin').textContent()).toMatch(/Desired \(version 1,/);
    } finally {
      await server.close();
      await rm(desiredFile, { force: true });
    }
  });

  it('token prompt: with API_TOKEN set the page asks for it, refuses a wrong one and works with the right one', async () => {
    daemon = await startDaemon({
      model: demo.model,
      manifest: demo.manifest,
      env: { API_TOKEN: 'line-secret-1' },
    });
    page = await open(daemon, '#model');
    const form = page.locator('#token-form');
    await form.locator('input').fill('wrong-token');
    await form.locator('button').click();
    await expect.poll(() => form.textContent()).toContain('That token was refused');
    await form.locator('input').fill('line-secret-1');
    await form.locator('button').click();
    await expect.poll(() => page!.locator('#active-model').textContent()).toContain('aoi-solder-bridge-demo');
    expect(await form.isHidden()).toBe(true);
  });

  it('review view: one key labels a captured frame ok, drawn boxes label another, both through the captures API', async () => {
    const desiredFile = path.join(tmpdir(), `edge-scorer-review-desired-${process.pid}-${Date.now()}.json`);
    await writeFile(
      desiredFile,
      JSON.stringify({
        capture: { enabled: true, rules: [{ reason: 'sample', rate: 1 }], upload: { target: 'none' } },
      }),
    );
    try {
      daemon = await startDaemon({
        model: demo.model,
        manifest: demo.manifest,
        env: { DESIRED_PROPERTIES_FILE: desiredFile, DESIRED_PROPERTIES_POLL_MS: '50' },
      });
      const d = daemon;
      await waitFor(async () => d.app.capture.settings.enabled || undefined, 'capture enabled');
      for (const [id, body] of [
        ['board-ok-1', demo.ok],
        ['board-bridge-1', demo.bridge],
      ] as const) {
        expect((await postFrame(`${d.url}/v1/score`, body, 'image/jpeg', { 'x-frame-id': id })).status).toBe(
          200,
        );
      }
      await d.app.engine.frames.idle();
      const labelOf = async (
        frameId: string,
      ): Promise<{
        verdict: string;
        label?: string;
        by?: string;
        boxes?: { label?: string; x: number; y: number; width: number; height: number }[];
      } | null> => {
        const list = (await request(`${d.url}/v1/captures`)).json as {
          items: { id: string; frameId: string }[];
        };
        const c = list.items.find((i) => i.frameId === frameId)!;
        return ((await request(`${d.url}/v1/captures/${c.id}/meta`)).json as { label: never }).label;
      };

      page = await open(d, '#review');
      const items = page.locator('#review-list li');
      await expect.poll(() => items.count()).toBe(2);
      // Newest first: the bridge frame is selected, with the model's answer in words.
      await expect.poll(() => page!.locator('#review-info').textContent()).toContain('frame board-bridge-1');
      await page.keyboard.press('b');
      const canvas = page.locator('#review-frame');
      const r = (await canvas.boundingBox())!;
      const { width: frameWidth } = await sharp(demo.bridge).metadata();
      const k = r.width / frameWidth;
      // A box from (100, 80) to (300, 240) in frame pixels, drawn with the mouse on the scaled canvas.
      await page.mouse.move(r.x + 100 * k, r.y + 80 * k);
      await page.mouse.down();
      await page.mouse.move(r.x + 200 * k, r.y + 160 * k);
      await page.mouse.move(r.x + 300 * k, r.y + 240 * k);
      await page.mouse.up();
      await page.keyboard.press('1');
      // The drawn box is on the screen, in the human box colour, along its left edge.
      const shot = await sharp(await canvas.screenshot())
        .removeAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true });
      const s = shot.info.width / frameWidth;
      const blue = ([cr, cg, cb]: [number, number, number]): boolean =>
        cb > 200 && cr < 120 && cg > 120 && cg < 200;
      const edge = [0.2, 0.4, 0.6, 0.8].map((f) => pixel(shot, 100 * s + 1, (80 + f * 160) * s));
      expect(edge.filter(blue)).toHaveLength(edge.length);
      await page.keyboard.press('Enter');
      await expect
        .poll(() => labelOf('board-bridge-1'))
        .toMatchObject({ verdict: 'defect', label: 'solder-bridge', by: 'console' });
      const saved = (await labelOf('board-bridge-1'))!.boxes!;
      expect(saved).toHaveLength(1);
      const [b] = saved;
      for (const [got, want] of [
        [b!.x, 100],
        [b!.y, 80],
        [b!.width, 200],
        [b!.height, 160],
      ] as const)
        expect(Math.abs(got - want)).toBeLessThanOrEqual(2 / k + 1);
      expect(b!.label).toBe('solder-bridge');

      // Saving moved on to the next capture: one key says it is fine.
      await expect.poll(() => page!.locator('#review-info').textContent()).toContain('frame board-ok-1');
      await page.keyboard.press('o');
      await expect.poll(() => labelOf('board-ok-1')).toMatchObject({ verdict: 'ok', by: 'console' });
      // Nothing is left to review.
      await page.locator('#review-filter').selectOption('unlabelled');
      await expect.poll(() => page!.locator('#review-status').textContent()).toContain('Nothing to review');
      expect(await labelOf('board-bridge-1')).toMatchObject({ verdict: 'defect' });
    } finally {
      await rm(desiredFile, { force: true });
    }
  });
});
