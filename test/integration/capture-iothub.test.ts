import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CaptureMessage } from '../../src/capture/service.js';
import { ACCOUNT_KEY, BlobProxy, startAzurite, type Azurite } from '../helpers/azurite.js';
import { jpegFrame } from '../helpers/captures.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { postFrame, request } from '../helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator, type JsonObject } from '../helpers/iothub-emulator.js';

/**
 * Capture as IoT Hub sees it, through the real SDK over TLS to the emulator: the twin's `capture`
 * block turns capture on, each capture is announced on the `captures` output with its blob name,
 * the frames land in Blob Storage (Azurite behind the edge module's API-version check), and the
 * `capture` state in reported properties follows — without the storage secret ever reaching IoT Hub.
 */

let azurite: Azurite;
let proxy: BlobProxy;
let hub: IotHubEmulator | undefined;
let daemon: Daemon | undefined;

beforeAll(async () => {
  azurite = await startAzurite();
});
afterAll(async () => {
  await azurite.close();
});
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await hub?.close();
  hub = undefined;
  await proxy?.close();
});

describe('capture through IoT Hub', () => {
  it('the twin turns capture on; each capture is announced on `captures`, uploaded, and counted in reported `capture`', async () => {
    proxy = await new BlobProxy(azurite.accountUrl).start();
    hub = await startIotHubEmulator({
      desired: {
        telemetry: { results: 'all', flushIntervalMs: 200 },
        capture: {
          enabled: true,
          rules: [
            { reason: 'defect', rate: 1 },
            { reason: 'sample', rate: 1 },
          ],
          upload: { target: 'blob', container: 'aoi-captures-hub', keepAfterUpload: false },
        },
      },
    });
    const h = hub;
    daemon = await startDaemon({
      env: {
        ...h.env(),
        TWIN_TIMEOUT_MS: '2000',
        CAPTURE_BLOB_CONNECTION_STRING: proxy.connectionString,
      },
    });
    const d = daemon;
    await h.waitForReported((r) => (r.capture as JsonObject | undefined)?.enabled === true, 20_000);

    const posted = [
      ['fr-a1', 'cam-a', 1],
      ['fr-b1', 'cam-b', 2],
      ['fr-a2', 'cam-a', 3],
    ] as const;
    for (const [frameId, cameraId, seed] of posted) {
      const a = await postFrame(`${d.url}/v1/score`, await jpegFrame(seed), 'image/jpeg', {
        'x-frame-id': frameId,
        'x-camera-id': cameraId,
      });
      expect(a.status).toBe(200);
    }

    const msgs = await h.waitForMessages((m) => m.output === 'captures', 20_000, 3);
    const bodies = msgs.map((m) => JSON.parse(m.body.toString('utf8')) as CaptureMessage);
    expect(bodies.map((b) => b.frameId).sort()).toEqual(['fr-a1', 'fr-a2', 'fr-b1']);
    const listed = (await request(`${d.url}/v1/captures?limit=10`)).json as {
      items: { id: string; frameId: string }[];
    };
    for (const [i, b] of bodies.entries()) {
      const [, cameraId] = posted.find(([f]) => f === b.frameId)!;
      expect(b).toMatchObject({
        cameraId,
        reason: 'defect',
        model: { name: 'test-classifier', version: '1' },
      });
      expect(listed.items.find((c) => c.frameId === b.frameId)?.id).toBe(b.id);
      const day = b.at.slice(0, 10).replaceAll('-', '/');
      expect(b.blob).toBe(`${h.deviceId}/${cameraId}/${day}/${b.frameId}.jpg`);
      expect(msgs[i]!.properties).toMatchObject({ reason: 'defect', modelVersion: '1' });
      expect(msgs[i]!.contentType).toBe('application/json');
    }

    // Every announced blob is in the container, frame and sidecar.
    const reported = await h.waitForReported((r) => {
      const c = r.capture as { uploaded?: number; pendingUpload?: number } | undefined;
      return c?.uploaded === 3 && c.pendingUpload === 0;
    }, 20_000);
    const container = azurite.service.getContainerClient('aoi-captures-hub');
    const names: string[] = [];
    for await (const b of container.listBlobsFlat()) names.push(b.name);
    for (const b of bodies) expect(names).toEqual(expect.arrayContaining([b.blob!, `${b.blob!}.json`]));
    expect(reported.capture).toMatchObject({ enabled: true, uploaded: 3, pendingUpload: 0, quarantined: 0 });
    // Uploaded and not kept: the frames are gone here, their records stay for labels.
    const after = (await request(`${d.url}/v1/captures?limit=10`)).json as {
      items: { frameKept: boolean }[];
    };
    expect(after.items.map((c) => c.frameKept)).toEqual([false, false, false]);
    // The account key and the connection string never reach IoT Hub.
    const upstream = JSON.stringify(reported) + msgs.map((m) => m.body.toString('utf8')).join('');
    expect(upstream).not.toContain(ACCOUNT_KEY);
    expect(upstream).not.toContain('AccountKey');
  });
});
