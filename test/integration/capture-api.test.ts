import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jpegFrame } from '../helpers/captures.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { postFrame, request } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';

const TOKEN = 'capture-test-token';
const auth = { authorization: `Bearer ${TOKEN}` };

let daemon: Daemon | undefined;
let dir: string | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function captureDaemon(capture: object): Promise<Daemon> {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-capture-api-'));
  const desired = path.join(dir, 'desired.json');
  await writeFile(desired, JSON.stringify({ capture }));
  return startDaemon({
    env: { DESIRED_PROPERTIES_FILE: desired, DESIRED_PROPERTIES_POLL_MS: '50', API_TOKEN: TOKEN },
  });
}

describe('captures API', () => {
  it('lists, serves and labels captures of frames scored over HTTP; bad input changes nothing', async () => {
    daemon = await captureDaemon({
      enabled: true,
      rules: [{ reason: 'sample', rate: 1 }],
      upload: { target: 'none' },
    });
    const d = daemon;
    await waitFor(async () => d.app.capture.settings.enabled || undefined, 'capture enabled');
    const frames = await Promise.all([1, 2, 3].map((i) => jpegFrame(i)));
    for (const [i, body] of frames.entries()) {
      const a = await postFrame(`${d.url}/v1/score`, body, 'image/jpeg', {
        ...auth,
        'x-frame-id': `frame-${i}`,
        'x-camera-id': i === 2 ? 'cam-b' : 'cam-a',
      });
      expect(a.status).toBe(200);
    }
    await d.app.engine.frames.idle();
    expect((await request(`${d.url}/v1/captures`)).json).toMatchObject({
      error: { code: 'EDGE_ERR_UNAUTHORIZED' },
    });

    const page1 = await request(`${d.url}/v1/captures?limit=2`, { headers: auth });
    const p1 = page1.json as { items: { id: string; frameId: string }[]; next: string };
    expect(p1.items.map((c) => c.frameId)).toEqual(['frame-2', 'frame-1']);
    const page2 = (await request(`${d.url}/v1/captures?limit=2&cursor=${p1.next}`, { headers: auth }))
      .json as typeof p1;
    expect(page2.items.map((c) => c.frameId)).toEqual(['frame-0']);
    expect(page2.next).toBeNull();
    const camB = (await request(`${d.url}/v1/captures?camera=cam-b`, { headers: auth })).json as typeof p1;
    expect(camB.items.map((c) => c.frameId)).toEqual(['frame-2']);

    const id = p1.items[1]!.id;
    const frame = await fetch(`${d.url}/v1/captures/${id}`, { headers: auth });
    expect(frame.headers.get('content-type')).toBe('image/jpeg');
    expect(Buffer.from(await frame.arrayBuffer())).toEqual(frames[1]);
    const meta = (await request(`${d.url}/v1/captures/${id}/meta`, { headers: auth })).json;
    expect(meta).toMatchObject({
      id,
      frameId: 'frame-1',
      cameraId: 'cam-a',
      reason: 'sample',
      model: { name: 'test-classifier', version: '1' },
      task: 'classification',
      label: null,
    });
    expect((meta as { model: { sha256: string } }).model.sha256).toMatch(/^[0-9a-f]{64}$/);

    const put = (body: unknown, target = id) =>
      request(`${d.url}/v1/captures/${target}/label`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    for (const bad of [
      {},
      { verdict: 'maybe' },
      { verdict: 'ok', extra: 1 },
      { verdict: 'defect', boxes: [{ x: 1 }] },
    ]) {
      const a = await put(bad);
      expect(a.status).toBe(400);
      expect(a.json).toMatchObject({ error: { code: 'EDGE_ERR_BAD_REQUEST' } });
    }
    expect((await put({ verdict: 'ok' }, '000000000-00000000')).status).toBe(404);
    expect((await request(`${d.url}/v1/captures?reason=nope`, { headers: auth })).status).toBe(400);
    expect(d.app.capture.store.get(id)!.label).toBeNull();

    const label = {
      verdict: 'defect',
      label: 'bridge',
      boxes: [{ x: 1, y: 2, width: 3, height: 4 }],
      by: 'op-7',
    };
    expect((await put(label)).status).toBe(200);
    const labelled = (await request(`${d.url}/v1/captures?labelled=true`, { headers: auth }))
      .json as typeof p1;
    expect(labelled.items.map((c) => c.id)).toEqual([id]);
    const after = (await request(`${d.url}/v1/captures/${id}/meta`, { headers: auth })).json;
    expect(after).toMatchObject({ label: { ...label, at: expect.any(String) as unknown } });
    expect(d.app.reported.document.capture).toMatchObject({ enabled: true, stored: 3 });
  });
});
