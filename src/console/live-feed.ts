import type { Logger } from 'pino';
import type { FrameStream } from '../scoring/frame-stream.js';
import type { ScoredFrame } from '../scoring/engine.js';
import { sharpOf } from '../scoring/frame-image.js';
import { anomalyMapPng } from '../http/anomaly-answer.js';
import type { LiveFrame } from './types.js';

export interface LiveFeedOptions {
  frames: FrameStream<ScoredFrame>;
  logger: Logger;
  /** Frames per second and camera at most sent to the pages (the rest are skipped undecoded). */
  maxFps: number;
  /** Width, pixels, the thumbnails are scaled down to (never up). */
  maxWidth: number;
}

/** One open page's live connection. */
export interface LiveClient {
  /** Only this camera's frames; undefined for every camera. */
  camera: string | undefined;
  send(frame: LiveFrame): void;
}

/**
 * The console's live view: scored frames, scaled down to JPEG thumbnails, to the pages that are
 * open (README, "Operator console"). It subscribes to the scored-frame stream only while at least
 * one page listens, so a line without an open page pays nothing; while one is open, at most
 * `maxFps` frames per camera are decoded and scaled (sharp, on the libuv pool), the others are
 * skipped before any decode. Its stream queue is small: a page that cannot keep up sees fewer
 * frames, never an older backlog, and never delays an answer.
 */
export class LiveFeed {
  private readonly clients = new Set<LiveClient>();
  private unsubscribe: (() => void) | undefined;
  private readonly lastSent = new Map<string, number>();
  private stopped = false;

  constructor(private readonly opts: LiveFeedOptions) {}

  /** Open pages right now. */
  get size(): number {
    return this.clients.size;
  }

  /** Whether the feed currently listens to the scored-frame stream. */
  get subscribed(): boolean {
    return this.unsubscribe !== undefined;
  }

  /** Adds a page; returns the function that removes it. */
  add(client: LiveClient): () => void {
    if (this.stopped) return () => undefined;
    this.clients.add(client);
    this.unsubscribe ??= this.opts.frames.subscribe('console', (f) => this.onFrame(f), {
      maxPending: 4,
      maxPendingBytes: 32 * 1024 * 1024,
    });
    return () => {
      this.clients.delete(client);
      if (this.clients.size === 0) this.release();
    };
  }

  start(): void {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
    this.clients.clear();
    this.release();
  }

  private release(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.lastSent.clear();
  }

  private async onFrame(f: ScoredFrame): Promise<void> {
    const camera = f.cameraId ?? 'default';
    const targets = [...this.clients].filter((c) => c.camera === undefined || c.camera === camera);
    if (targets.length === 0) return;
    const now = performance.now();
    const last = this.lastSent.get(camera);
    if (last !== undefined && now - last < 1000 / this.opts.maxFps) return;
    this.lastSent.set(camera, now);
    const frame = await this.thumbnail(f, camera);
    if (!frame) return;
    for (const c of targets) if (this.clients.has(c)) c.send(frame);
  }

  private async thumbnail(f: ScoredFrame, camera: string): Promise<LiveFrame | undefined> {
    const width = f.geometry.frameWidth;
    const height = f.geometry.frameHeight;
    const scale = Math.min(1, this.opts.maxWidth / width);
    const w = Math.max(1, Math.round(width * scale));
    const h = Math.max(1, Math.round(height * scale));
    let jpeg: Buffer;
    try {
      jpeg = await sharpOf(f.frame).resize(w, h, { fit: 'fill' }).jpeg({ quality: 70 }).toBuffer();
    } catch (err) {
      this.opts.logger.debug({ component: 'console', frameId: f.frameId, err }, 'live thumbnail failed');
      return undefined;
    }
    const p = f.prediction;
    const a = p.anomaly;
    let anomaly: LiveFrame['anomaly'];
    if (a) {
      const png = a.map ? await anomalyMapPng(a.map).catch(() => undefined) : undefined;
      anomaly = {
        score: a.score,
        threshold: a.threshold,
        regions: a.regions.slice(0, 100).map((r) => ({ box: r.box, peak: r.peak })),
        map: png && a.map ? { image: png.toString('base64'), box: a.map.frame } : undefined,
      };
    }
    return {
      frameId: f.frameId,
      cameraId: camera,
      at: f.at,
      model: { name: f.model.name, version: f.model.version },
      task: f.task,
      defect: p.defect,
      width,
      height,
      classification: p.classification?.slice(0, 3),
      detections: p.detections?.slice(0, 100),
      anomaly,
      timing: { totalMs: f.timing.totalMs },
      image: jpeg.toString('base64'),
    };
  }
}
