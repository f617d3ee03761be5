import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { BlobProxy, startAzurite, type Azurite } from '../helpers/azurite.js';
import { jpegFrame } from '../helpers/captures.js';
import { freePort, killIfRunning, spawnDaemon, type ChildDaemon } from '../helpers/child-daemon.js';
import { postFrame } from '../helpers/http.js';
import { waitFor } from '../helpers/lifecycle.js';

let azurite: Azurite | undefined;
let proxy: BlobProxy | undefined;
let child: ChildDaemon | undefined;
let dir: string | undefined;

afterEach(async () => {
  await killIfRunning(child);
  await proxy?.close();
  await azurite?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Sidecar {
  frameId: string;
  frame: { file?: string; bytes: number };
  upload: { state: string; blob?: string };
}

/**
 * SIGKILL while captures are being written and uploaded: after a restart nothing half-written is
 * listed or uploaded, and every capture that was stored reaches Blob Storage with its exact bytes.
 */
it('a daemon killed during captures and uploads restarts with nothing lost or half-written', async () => {
  azurite = await startAzurite();
  proxy = await new BlobProxy(azurite.accountUrl).start();
  proxy.delayMs = 100;
  dir = await mkdtemp(path.join(tmpdir(), 'edge-capture-crash-'));
  const desiredFile = path.join(dir, 'desired.json');
  const desired = (maxBytesPerSec: number): string =>
    JSON.stringify({
      capture: {
        enabled: true,
        rules: [{ reason: 'sample', rate: 1 }],
        upload: { container: 'aoi-captures', maxBytesPerSec, keepAfterUpload: true },
      },
    });
  await writeFile(desiredFile, desired(20_000));
  const env = {
    DATA_DIR: path.join(dir, 'data'),
    DESIRED_PROPERTIES_FILE: desiredFile,
    DESIRED_PROPERTIES_POLL_MS: '50',
    EXECUTION_PROVIDERS: 'cpu',
    CAPTURE_BLOB_CONNECTION_STRING: proxy.connectionString,
    IOTEDGE_DEVICEID: 'aoi-7',
  };
  const port = await freePort();
  child = await spawnDaemon(env, port);
  const posted = new Map<string, Buffer>();
  const uploadedFrames = () =>
    proxy!.seen.filter((s) => s.method === 'PUT' && s.path.endsWith('.jpg') && s.status < 300);
  let kill = false;
  const posting = (async () => {
    for (let i = 0; !kill && i < 200; i++) {
      const body = await jpegFrame(i, 64);
      posted.set(`frame-${i}`, body);
      await postFrame(`${child.url}/v1/score`, body, 'image/jpeg', {
        'x-frame-id': `frame-${i}`,
        'x-camera-id': 'cam-1',
      }).catch(() => undefined);
    }
  })();
  await waitFor(async () => (uploadedFrames().length >= 3 ? true : undefined), 'some uploads', 30_000);
  child.kill('SIGKILL');
  kill = true;
  expect(await child.exited).toBe('SIGKILL');
  await posting;
  const beforeRestart = uploadedFrames().length;

  await writeFile(desiredFile, desired(100_000_000));
  child = await spawnDaemon(env, port);
  const store = path.join(dir, 'data', 'captures');
  const sidecars = async (): Promise<Sidecar[]> => {
    const names = (await readdir(store)).filter((n) => n.endsWith('.json'));
    return Promise.all(
      names.map(async (n) => JSON.parse(await readFile(path.join(store, n), 'utf8')) as Sidecar),
    );
  };
  // One upload at a time (docs/capture.md, "Upload"), each request delayed by the proxy:
  // the wait allows for how many captures the killed daemon left, which depends on how fast it
  // scored the frames posted before the kill.
  const left = (await sidecars()).filter((s) => s.upload.state !== 'uploaded').length;
  await waitFor(
    async () => ((await sidecars()).every((s) => s.upload.state === 'uploaded') ? true : undefined),
    'every capture uploaded after the restart',
    30_000 + left * 3 * proxy.delayMs,
  );
  const all = await sidecars();
  expect(all.length).toBeGreaterThan(beforeRestart);
  expect(await readdir(path.join(store, '.tmp'))).toEqual([]);
  const container = azurite.service.getContainerClient('aoi-captures');
  for (const s of all) {
    expect(s.upload.blob).toMatch(new RegExp(`^aoi-7/cam-1/\\d{4}/\\d{2}/\\d{2}/${s.frameId}\\.jpg$`));
    const blob = await container.getBlobClient(s.upload.blob!).downloadToBuffer();
    expect(blob).toEqual(posted.get(s.frameId));
    expect(await readFile(path.join(store, s.frame.file!))).toEqual(posted.get(s.frameId));
    const sidecar = JSON.parse(
      (await container.getBlobClient(`${s.upload.blob!}.json`).downloadToBuffer()).toString(),
    ) as Sidecar;
    expect(sidecar.frameId).toBe(s.frameId);
  }
  // Every frame blob in the container belongs to a listed capture: none half-written or orphaned.
  const frames: string[] = [];
  for await (const b of container.listBlobsFlat()) if (b.name.endsWith('.jpg')) frames.push(b.name);
  expect(frames.sort()).toEqual(all.map((s) => s.upload.blob!).sort());
}, 90_000);
