import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import type { LiveFrame, ModelView } from '../../src/console/types.js';
import { openLive, demoModel } from '../helpers/console.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { postFrame, request } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';

/**
 * The operator console's server side against a real daemon: the page and its CSP, the token rule,
 * and what the live view costs — nothing while no page is open; scaled-down frames at a bounded
 * rate per camera while one is.
 */

let daemon: Daemon | undefined;
const demo = await demoModel();

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

const start = (env: Record<string, string> = {}): Promise<Daemon> =>
  startDaemon({ model: demo.model, manifest: demo.manifest, env });

describe('operator console', () => {
  it('serves the page at / with a same-origin-only CSP, and the bundle it loads', async () => {
    daemon = await start();
    const page = await request(`${daemon.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/^default-src 'self'/);
    const src = /<script type="module" src="([^"]+)"/.exec(page.text)?.[1];
    expect(src).toBe('/console/app.js');
    const js = await request(`${daemon.url}${src}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect(js.text).toContain('/v1/console/live');
    // Nothing in the bundle names another origin.
    expect(js.text).not.toMatch(/https?:\/\/(?!www\.w3\.org)/);
  });

  it('is absent with ENABLE_CONSOLE=false', async () => {
    daemon = await start({ ENABLE_CONSOLE: 'false' });
    expect((await request(`${daemon.url}/`)).status).toBe(404);
    expect((await request(`${daemon.url}/v1/console/model`)).status).toBe(404);
  });

  it('follows the API token rule: the page loads without it, its data needs it', async () => {
    daemon = await start({ API_TOKEN: 'line-secret-1' });
    expect((await request(`${daemon.url}/`)).status).toBe(200);
    for (const path of ['/v1/console/model', '/v1/console/health', '/v1/console/live']) {
      const r = await request(`${daemon.url}${path}`);
      expect(r.status, path).toBe(401);
      expect(r.json).toMatchObject({ error: { code: 'EDGE_ERR_UNAUTHORIZED' } });
    }
    const ok = await request(`${daemon.url}/v1/console/model`, {
      headers: { authorization: 'Bearer line-secret-1' },
    });
    expect(ok.status).toBe(200);
    expect((ok.json as ModelView).model).toMatchObject({ name: 'aoi-solder-bridge-demo', version: '1' });
  });

  it('subscribes to the scored-frame stream only while a page is open', async () => {
    daemon = await start();
    expect(daemon.app.engine.frames.subscribers).not.toContain('console');
    const live = await openLive(`${daemon.url}/v1/console/live`);
    expect(live.status).toBe(200);
    expect(daemon.app.engine.frames.subscribers).toContain('console');
    live.close();
    await waitFor(
      () => (daemon!.app.engine.frames.subscribers.includes('console') ? undefined : true),
      'console unsubscribed',
    );
  });

  it('sends a page scaled-down frames with their boxes, at most 2 per second per camera', async () => {
    daemon = await start();
    const live = await openLive(`${daemon.url}/v1/console/live`);
    // Each camera sends a burst far faster than 2 frames/s.
    const answers = (
      await Promise.all(
        ['cam-a', 'cam-b'].map((cam) =>
          Promise.all(
            Array.from({ length: 6 }, () =>
              postFrame(`${daemon!.url}/v1/score`, demo.bridge, 'image/jpeg', { 'x-camera-id': cam }),
            ),
          ),
        ),
      )
    ).flat();
    await daemon.app.engine.frames.idle();
    await waitFor(() => (live.events.length >= 2 ? true : undefined), 'live frames');
    live.close();
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const frames = live.events.filter((e) => e.event === 'frame').map((e) => JSON.parse(e.data) as LiveFrame);
    expect(new Set(frames.map((f) => f.cameraId))).toEqual(new Set(['cam-a', 'cam-b']));
    for (const cam of ['cam-a', 'cam-b']) {
      const times = frames.filter((f) => f.cameraId === cam).map((f) => Date.parse(f.at));
      expect(times.length, cam).toBeLessThan(6);
      // Frames sent for one camera are 500 ms apart at the least; their answer times (`at`) may be
      // closer by how long a thumbnail waited behind the ones before it.
      for (let i = 1; i < times.length; i++)
        expect(times[i]! - times[i - 1]!, cam).toBeGreaterThanOrEqual(300);
    }
    const f = frames[0]!;
    const answer = answers.find((a) => (a.json as { frameId: string }).frameId === f.frameId)!.json as {
      detections: unknown[];
    };
    expect(f.defect).toBe(true);
    expect(f.detections).toEqual(answer.detections);
    const meta = await sharp(Buffer.from(f.image, 'base64')).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBeLessThanOrEqual(640);
    expect(meta.width / meta.height).toBeCloseTo(f.width / f.height, 1);
  });

  it('shows the desired document without URL queries (a SAS token never reaches the page)', async () => {
    daemon = await start();
    daemon.app.reported.set('probe', { url: 'https://blob.example/models/m.onnx?sv=2024&sig=SECRET' });
    const r = await request(`${daemon.url}/v1/console/model`);
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('SECRET');
    expect((r.json as { reported: { probe: { url: string } } }).reported.probe.url).toBe(
      'https://blob.example/models/m.onnx?…',
    );
  });

  it('an open live page never holds up the stop: its stream is ended and the daemon stops', async () => {
    const d = await start();
    const live = await openLive(`${d.url}/v1/console/live`);
    expect(live.status).toBe(200);
    const started = Date.now();
    await d.stop();
    // Far below SHUTDOWN_TIMEOUT_MS, which a stream left open would run into.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(d.app.engine.frames.subscribers).not.toContain('console');
    live.close();
  });

  it('a page filtered to one camera is sent the frames of that camera only', async () => {
    daemon = await start();
    const live = await openLive(`${daemon.url}/v1/console/live?camera=cam-b`);
    for (const cam of ['cam-a', 'cam-b', 'cam-a']) {
      const r = await postFrame(`${daemon.url}/v1/score`, demo.ok, 'image/jpeg', { 'x-camera-id': cam });
      expect(r.status).toBe(200);
    }
    await daemon.app.engine.frames.idle();
    await waitFor(() => (live.events.length >= 1 ? true : undefined), 'a live frame');
    live.close();
    const cams = live.events.map((e) => (JSON.parse(e.data) as LiveFrame).cameraId);
    expect(cams).toEqual(['cam-b']);
  });
});
