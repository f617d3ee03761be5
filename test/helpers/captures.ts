import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import sharp from 'sharp';
import type { CapturableFrame } from '../../src/capture/service.js';
import { CaptureService } from '../../src/capture/service.js';

/** A small JPEG whose bytes differ per `seed`, so each capture can be told apart by its bytes. */
export async function jpegFrame(seed: number, size = 48): Promise<Buffer> {
  const raw = Buffer.alloc(size * size * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + seed * 31) & 0xff;
  return sharp(raw, { raw: { width: size, height: size, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

/** A scored frame as the engine publishes it, with the answer the test wants. */
export function scored(
  body: Buffer,
  over: { cameraId?: string | null; defect?: boolean; top?: number; label?: string; frameId?: string } = {},
): CapturableFrame {
  const top = over.top ?? 0.95;
  return {
    frameId: over.frameId ?? `f-${Math.random().toString(36).slice(2, 10)}`,
    cameraId: over.cameraId === undefined ? 'cam-1' : over.cameraId,
    frame: { body, mediaType: 'image/jpeg' },
    model: { name: 'pcb-aoi', version: '7', sha256: 'a'.repeat(64) },
    task: 'classification',
    prediction: {
      defect: over.defect ?? false,
      classification: [
        { label: over.label ?? (over.defect ? 'bridge' : 'ok'), score: top },
        { label: 'missing', score: 1 - top },
      ],
    },
    geometry: { frameWidth: 48, frameHeight: 48 },
    at: new Date().toISOString(),
  };
}

const started: CaptureService[] = [];

/** Stops every service {@link captureService} started (afterEach). */
export async function stopCaptureServices(): Promise<void> {
  for (const s of started.splice(0)) await s.stop();
}

/** A capture service on its own temp dir and registry; stop it with {@link stopCaptureServices}. */
export async function captureService(
  over: Partial<ConstructorParameters<typeof CaptureService>[0]> = {},
): Promise<{ service: CaptureService; dir: string; registry: Registry }> {
  const dir = over.dir ?? path.join(await mkdtemp(path.join(tmpdir(), 'edge-capture-')), 'captures');
  const registry = new Registry();
  const service = new CaptureService({
    dir,
    logger: pino({ level: 'silent' }),
    registry,
    deviceId: 'line-3-aoi',
    ...over,
  });
  await service.start();
  started.push(service);
  return { service, dir, registry };
}
