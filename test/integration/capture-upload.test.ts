import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ContainerClient,
  ContainerSASPermissions,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  newPipeline,
} from '@azure/storage-blob';
import { pino } from 'pino';
import type { Registry } from 'prom-client';
import type { CaptureService } from '../../src/capture/service.js';
import { ACCOUNT, ACCOUNT_KEY, BlobProxy, startAzurite, type Azurite } from '../helpers/azurite.js';
import { captureService, jpegFrame, scored, stopCaptureServices } from '../helpers/captures.js';
import { waitFor } from '../helpers/lifecycle.js';

let azurite: Azurite;
let proxy: BlobProxy;
let n = 0;

beforeAll(async () => {
  azurite = await startAzurite();
});
afterAll(async () => {
  await azurite.close();
});
afterEach(async () => {
  await stopCaptureServices();
  await proxy.close();
});

async function setup(
  upload: object,
  over: { logs?: string[] } = {},
): Promise<{ service: CaptureService; registry: Registry; container: ContainerClient; name: string }> {
  proxy = await new BlobProxy(azurite.accountUrl).start();
  const name = `aoi-captures-${++n}`;
  const logger = over.logs
    ? pino({ level: 'debug' }, { write: (l: string) => void over.logs!.push(l) })
    : pino({ level: 'silent' });
  const { service, registry } = await captureService({
    connectionString: proxy.connectionString,
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    logger,
  });
  await service.setSettings({
    enabled: true,
    rules: [
      { reason: 'defect', rate: 1 },
      { reason: 'sample', rate: 1 },
    ],
    upload: { container: name, ...upload },
  });
  return { service, registry, container: azurite.service.getContainerClient(name), name };
}

const settled = (s: CaptureService, uploaded: number) =>
  waitFor(
    async () => (s.report().uploaded >= uploaded && s.report().pendingUpload === 0 ? true : undefined),
    'uploads',
    20_000,
  );

describe('capture upload to Blob Storage (Azurite behind an API-version check)', () => {
  it('lands frames and sidecars with the right names, bytes and metadata; labels before and after reach the sidecar', async () => {
    const { service, container, registry } = await setup({ keepAfterUpload: false });
    const bodies = await Promise.all([1, 2].map((i) => jpegFrame(i)));
    await service.handle(scored(bodies[0]!, { defect: true, frameId: 'fr/1', cameraId: 'cam-a' }));
    const first = [...service.store.records()][0]!;
    // Labelled before upload (the queue may or may not have sent it yet: both must end the same).
    await service.label(first.id, {
      verdict: 'defect',
      label: 'bridge',
      by: 'op-1',
      at: new Date().toISOString(),
    });
    await service.handle(scored(bodies[1]!, { top: 0.9, frameId: 'fr-2', cameraId: 'cam-b' }));
    await settled(service, 2);

    const day = first.capturedAt.slice(0, 10).replaceAll('-', '/');
    const name1 = `line-3-aoi/cam-a/${day}/fr_1.jpg`;
    const blob = container.getBlobClient(name1);
    expect(await blob.downloadToBuffer()).toEqual(bodies[0]);
    const props = await blob.getProperties();
    expect(props.contentType).toBe('image/jpeg');
    expect(props.metadata).toMatchObject({
      modelversion: '7',
      modelname: 'pcb-aoi',
      reason: 'defect',
      frameid: 'fr/1',
      cameraid: 'cam-a',
    });
    const sidecar = JSON.parse(
      (await container.getBlobClient(`${name1}.json`).downloadToBuffer()).toString(),
    ) as Record<string, unknown>;
    expect(sidecar).toMatchObject({
      id: first.id,
      frameId: 'fr/1',
      reason: 'defect',
      model: { version: '7' },
      label: { verdict: 'defect', label: 'bridge', by: 'op-1' },
    });
    expect(sidecar.upload).toBeUndefined();
    // Uploaded frames are removed locally (keepAfterUpload false); the sidecar stays for labels.
    expect(await service.store.readFrame(first.id)).toBeUndefined();

    const second = [...service.store.records()][1]!;
    expect(second.upload.state).toBe('uploaded');
    await service.label(second.id, { verdict: 'ok', by: 'op-2', at: new Date().toISOString() });
    await settled(service, 2);
    const name2 = `line-3-aoi/cam-b/${day}/fr-2.jpg`;
    const after = JSON.parse(
      (await container.getBlobClient(`${name2}.json`).downloadToBuffer()).toString(),
    ) as Record<string, unknown>;
    expect(after).toMatchObject({ label: { verdict: 'ok', by: 'op-2' } });
    expect(await container.getBlobClient(name2).downloadToBuffer()).toEqual(bodies[1]);

    // Every request the daemon made carried the pinned version (the proxy refuses any other).
    expect(proxy.seen.length).toBeGreaterThanOrEqual(5);
    expect(new Set(proxy.seen.map((s) => s.version))).toEqual(new Set(['2019-07-07']));
    // Nothing refused; the one 404 allowed is the first read of the day's JSONL, before it exists.
    expect(
      proxy.seen.filter(
        (s) =>
          s.status >= 400 &&
          !(['GET', 'HEAD'].includes(s.method) && s.status === 404 && s.path.includes('annotations.jsonl')),
      ),
    ).toEqual([]);
    expect(await registry.metrics()).toMatch(/capture_uploads_total\{kind="sidecar",outcome="uploaded"\} 1/);
  });

  it('the check can fail: the SDK on its own sends a newer version and is refused', async () => {
    proxy = await new BlobProxy(azurite.accountUrl).start();
    const bare = new ContainerClient(
      `${proxy.accountUrl}/bare`,
      newPipeline(new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY), { retryOptions: { maxTries: 1 } }),
    );
    await expect(bare.createIfNotExists()).rejects.toMatchObject({ statusCode: 400 });
    expect(proxy.seen[0]!.version).not.toBe('2019-07-07');
  });

  it('uploads through a container SAS and never logs or reports it', async () => {
    const logs: string[] = [];
    const name = `aoi-captures-sas-${++n}`;
    await azurite.service.getContainerClient(name).createIfNotExists();
    const { service } = await setup({}, { logs });
    const sas = generateBlobSASQueryParameters(
      {
        containerName: name,
        permissions: ContainerSASPermissions.parse('rcw'),
        expiresOn: new Date(Date.now() + 3_600_000),
        version: '2019-07-07',
      },
      new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY),
    ).toString();
    const sasUrl = `${proxy.accountUrl}/${name}?${sas}`;
    await service.setSettings({
      enabled: true,
      rules: [{ reason: 'sample', rate: 1 }],
      upload: { container: name, sasUrl },
    });
    proxy.failNext = 1; // one failure, so an error path is logged and reported too
    await service.handle(scored(await jpegFrame(9), { frameId: 'sas-1' }));
    await settled(service, 1);
    const blobs: string[] = [];
    for await (const b of azurite.service.getContainerClient(name).listBlobsFlat()) {
      if (!b.name.endsWith('annotations.jsonl')) blobs.push(b.name);
    }
    expect(blobs.sort()).toEqual([
      expect.stringMatching(/sas-1\.jpg$/),
      expect.stringMatching(/sas-1\.jpg\.json$/),
    ]);
    const sig = new URLSearchParams(sas).get('sig')!;
    const everything = logs.join('\n') + JSON.stringify(service.report());
    expect(logs.join('\n')).toContain('capture upload failed');
    expect(everything).not.toContain(sig);
    expect(everything).not.toContain(encodeURIComponent(sig));
    expect(everything).not.toContain(ACCOUNT_KEY);
  });

  it('retries a failing and slow server with backoff until everything is uploaded', async () => {
    const { service, container, registry } = await setup({});
    proxy.failNext = 4;
    proxy.delayMs = 150;
    const bodies = await Promise.all([1, 2, 3].map((i) => jpegFrame(20 + i)));
    for (const [i, b] of bodies.entries())
      await service.handle(scored(b, { defect: true, frameId: `retry-${i}` }));
    await settled(service, 3);
    for (const [i, b] of bodies.entries()) {
      const day = [...service.store.records()][i]!.capturedAt.slice(0, 10).replaceAll('-', '/');
      expect(
        await container.getBlobClient(`line-3-aoi/cam-1/${day}/retry-${i}.jpg`).downloadToBuffer(),
      ).toEqual(b);
    }
    expect(proxy.seen.filter((s) => s.status === 503)).toHaveLength(4);
    expect(await registry.metrics()).toMatch(/capture_uploads_total\{kind="capture",outcome="retry"\} [1-9]/);
    expect(service.report().lastError).toMatchObject({ code: 'BLOB_ServerBusy' });
  });

  it('honours the bandwidth cap', async () => {
    const rate = 40_000;
    const { service } = await setup({ maxBytesPerSec: rate });
    const bodies = await Promise.all([1, 2, 3, 4, 5].map((i) => jpegFrame(40 + i, 128)));
    for (const b of bodies) await service.handle(scored(b, { defect: true }));
    await settled(service, 5);
    const puts = proxy.seen.filter((s) => s.method === 'PUT' && s.bytes > 0);
    expect(puts.length).toBeGreaterThanOrEqual(10); // frames, sidecars and the day's JSONL: all paced
    const t0 = puts[0]!.at;
    let before = 0;
    for (const p of puts) {
      // A request may start only once the bytes before it fit the cap (a lower bound: load only
      // delays). The slack covers the first request being seen late (it is timed on arrival).
      expect(p.at - t0).toBeGreaterThanOrEqual((before / rate) * 1000 - 100);
      before += p.bytes;
    }
    expect(before / rate).toBeGreaterThan(1); // the test spans more than a second of budget
  });

  it('quarantines a blob the server refuses for good, without blocking the others', async () => {
    const { service, registry, container } = await setup({});
    proxy.refuse = (p) => (p.includes('poison') ? 403 : undefined);
    await service.handle(scored(await jpegFrame(60), { defect: true, frameId: 'poison' }));
    for (let i = 0; i < 3; i++)
      await service.handle(scored(await jpegFrame(61 + i), { defect: true, frameId: `fine-${i}` }));
    await waitFor(
      async () =>
        service.report().quarantined === 1 &&
        service.report().uploaded === 3 &&
        /outcome="quarantined"\} 1/.test(await registry.metrics())
          ? true
          : undefined,
      'quarantine',
      20_000,
    );
    const poison = [...service.store.records()].find((r) => r.frameId === 'poison')!;
    expect(poison.upload).toMatchObject({
      state: 'quarantined',
      attempts: 3,
      lastError: { code: 'BLOB_AuthorizationPermissionMismatch' },
    });
    expect(proxy.seen.filter((s) => s.path.includes('poison'))).toHaveLength(3);
    expect(await registry.metrics()).toMatch(
      /capture_uploads_total\{kind="capture",outcome="quarantined"\} 1/,
    );
    const names: string[] = [];
    for await (const b of container.listBlobsFlat()) names.push(b.name);
    expect(names.filter((x) => x.endsWith('.jpg'))).toHaveLength(3);
    // Kept locally with its frame: nothing is lost silently.
    expect(await service.store.readFrame(poison.id)).toBeDefined();
  });

  it("writes the day's JSONL per camera in AzureML AutoML-for-images shape, human labels marked", async () => {
    const datastorePath = 'azureml://datastores/aoi_captures/paths';
    const { service, container } = await setup({ datastorePath });
    const a = scored(await jpegFrame(70), { defect: true, frameId: 'j-human', cameraId: 'cam-j' });
    const b = scored(await jpegFrame(71), { top: 0.9, frameId: 'j-model', cameraId: 'cam-j' });
    const c = scored(await jpegFrame(72), { top: 0.9, frameId: 'j-later', cameraId: 'cam-j' });
    const det = scored(await jpegFrame(73), { defect: true, frameId: 'j-det', cameraId: 'cam-d' });
    det.task = 'detection';
    det.prediction = {
      defect: true,
      detections: [{ label: 'bridge', score: 0.9, box: { x: 12, y: 6, width: 24, height: 12 } }],
    };
    for (const f of [a, b, c, det]) await service.handle(f);
    const ids = new Map([...service.store.records()].map((r) => [r.frameId, r.id]));
    await service.label(ids.get('j-human')!, {
      verdict: 'defect',
      label: 'missing',
      at: new Date().toISOString(),
    });
    await settled(service, 4);
    await service.label(ids.get('j-later')!, {
      verdict: 'defect',
      label: 'shift',
      at: new Date().toISOString(),
    });

    const day = [...service.store.records()][0]!.capturedAt.slice(0, 10).replaceAll('-', '/');
    type Line = { image_url: string; image_details: object; label: unknown; label_source: string };
    const read = async (camera: string): Promise<Line[]> => {
      const text = await container
        .getBlobClient(`line-3-aoi/${camera}/${day}/annotations.jsonl`)
        .downloadToBuffer()
        .then(
          (x) => x.toString(),
          () => '',
        );
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Line);
    };
    await waitFor(
      async () => ((await read('cam-j')).some((l) => l.label === 'shift') ? true : undefined),
      'jsonl',
      20_000,
    );
    const lines = await read('cam-j');
    expect(lines).toHaveLength(3);
    for (const l of lines) {
      expect(Object.keys(l).sort()).toEqual(['image_details', 'image_url', 'label', 'label_source']);
      expect(l.image_details).toEqual({ format: 'jpeg', width: 48, height: 48 });
      // Every line names an uploaded frame.
      const blob = l.image_url.slice(datastorePath.length + 1);
      expect(l.image_url.startsWith(`${datastorePath}/line-3-aoi/cam-j/`)).toBe(true);
      expect((await container.getBlobClient(blob).getProperties()).contentLength).toBeGreaterThan(0);
    }
    const by = (frame: string) => lines.find((l) => l.image_url.endsWith(`/${frame}.jpg`))!;
    expect(by('j-human')).toMatchObject({ label: 'missing', label_source: 'human' });
    expect(by('j-model')).toMatchObject({ label: 'ok', label_source: 'model' });
    expect(by('j-later')).toMatchObject({ label: 'shift', label_source: 'human' });
    await waitFor(
      async () => ((await read('cam-d')).length === 1 ? true : undefined),
      'detector jsonl',
      20_000,
    );
    expect((await read('cam-d'))[0]).toMatchObject({
      label: [{ label: 'bridge', topX: 0.25, topY: 0.125, bottomX: 0.75, bottomY: 0.375 }],
      label_source: 'model',
    });
  });
});
