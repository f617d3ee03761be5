import type { ContainerClient } from '@azure/storage-blob';
import type { Logger } from 'pino';
import { containerClient, classify, type BlobTarget } from './blob-client.js';
import { jsonlBlobOf, jsonlLine, mergeJsonl } from './jsonl.js';
import type { CaptureMetrics } from './metrics.js';
import { publicSidecar, type CaptureRecord } from './record.js';
import type { CaptureStore } from './store.js';
import type { UploadSettings } from './settings.js';

/** Refusals (4xx other than 408/429) of one capture before it is quarantined. */
export const QUARANTINE_AFTER = 3;

export interface UploaderOptions {
  store: CaptureStore;
  metrics: CaptureMetrics;
  logger: Logger;
  deviceId: string;
  /** CAPTURE_BLOB_CONNECTION_STRING (a secret). */
  connectionString: string | undefined;
  /** First retry delay after a failure, doubled per failure up to `backoffMaxMs`. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Told when a capture is safe upstream, or quarantined, or a request failed (for reporting). */
  onUploaded?: (r: CaptureRecord) => void;
  onQuarantined?: (r: CaptureRecord) => void;
  onError?: (e: { code: string; message: string }) => void;
}

const safe = (s: string): string => s.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 128) || '_';

/** `<device>/<camera>/<yyyy>/<mm>/<dd>/<frameId>.<ext>`, UTC date of the capture. */
export function blobNameOf(deviceId: string, r: CaptureRecord): string {
  const d = new Date(r.capturedAt);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return [
    safe(deviceId),
    safe(r.cameraId ?? 'unknown'),
    String(d.getUTCFullYear()),
    p2(d.getUTCMonth() + 1),
    p2(d.getUTCDate()),
    `${safe(r.frameId)}.${r.frame.ext}`,
  ].join('/');
}

/** Blob metadata: ASCII header values only. */
function metadataOf(r: CaptureRecord): Record<string, string> {
  const ascii = (s: string): string => s.replace(/[^\x20-\x7e]/g, '_').slice(0, 256);
  return {
    captureid: r.id,
    frameid: ascii(r.frameId),
    cameraid: ascii(r.cameraId ?? 'unknown'),
    reason: r.reason,
    modelname: ascii(r.model.name),
    modelversion: ascii(r.model.version),
    modelsha256: r.model.sha256,
  };
}

/** Whether a capture has something to send: its frame, or a label newer than the uploaded sidecar. */
export function needsUpload(r: CaptureRecord): boolean {
  return (
    r.upload.state === 'pending' ||
    (r.upload.state === 'uploaded' && r.upload.labelRevision > r.upload.uploadedRevision)
  );
}

/**
 * The upload queue (docs/capture.md, "Upload"). Durable because it is the store's sidecars
 * (`upload.state`): after a restart or SIGKILL whatever was not recorded as uploaded is sent
 * again (a blob write is idempotent). One upload at a time, oldest first, paced to
 * `maxBytesPerSec`. A failure that may pass (network, 5xx, 408, 429) pauses the whole queue with
 * backoff; a refusal (other 4xx) sets only that capture back, and after {@link QUARANTINE_AFTER}
 * refusals it is quarantined and counted, so it never blocks the others.
 */
export class CaptureUploader {
  private readonly queue = new Set<string>();
  private readonly notBefore = new Map<string, number>();
  private settings: UploadSettings | undefined;
  private client: { client: ContainerClient; canCreate: boolean; key: string } | undefined;
  private containerReady = false;
  private pauseUntil = 0;
  private failures = 0;
  private nextSendAt = 0;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private abort = new AbortController();
  private stopped = false;
  /** Day-and-camera JSONL files to rewrite once the queue is idle. */
  private readonly dirtyJsonl = new Set<string>();

  constructor(private readonly opts: UploaderOptions) {}

  get depth(): number {
    return this.queue.size;
  }

  /** Loads the queue from the store and starts the loop. */
  start(): void {
    for (const r of this.opts.store.records()) if (needsUpload(r)) this.queue.add(r.id);
    this.loop = this.run();
  }

  /** New upload settings (from the twin); a changed target gets a new client. */
  configure(settings: UploadSettings): void {
    this.settings = settings;
    this.kick();
  }

  /** A capture was stored or labelled. */
  notify(r: CaptureRecord): void {
    if (!needsUpload(r)) return;
    this.queue.delete(r.id);
    this.queue.add(r.id);
    this.kick();
  }

  private kick(): void {
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.kick();
    await this.loop;
  }

  private target(): BlobTarget | undefined {
    const s = this.settings;
    if (!s || s.target !== 'blob') return undefined;
    if (!s.sasUrl && !this.opts.connectionString) return undefined;
    return { sasUrl: s.sasUrl, connectionString: this.opts.connectionString, container: s.container };
  }

  private clientFor(t: BlobTarget): { client: ContainerClient; canCreate: boolean } {
    const key = `${t.sasUrl ?? ''}|${t.container}`;
    if (this.client?.key !== key) {
      this.client = { ...containerClient(t), key };
      this.containerReady = false;
    }
    return this.client;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).then(() => {
      this.wake = undefined;
    });
  }

  /** The oldest queued capture not set back by a refusal, or the time the first one is due. */
  private next(now: number): { id?: string; dueAt: number } {
    let dueAt = Infinity;
    for (const id of this.queue) {
      const r = this.opts.store.get(id);
      if (!r || !needsUpload(r)) {
        this.queue.delete(id);
        this.notBefore.delete(id);
        continue;
      }
      const t = this.notBefore.get(id) ?? 0;
      if (t <= now) return { id, dueAt: now };
      dueAt = Math.min(dueAt, t);
    }
    return { dueAt };
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.opts.metrics.queueDepth.set(this.queue.size);
      const t = this.target();
      const now = Date.now();
      const { id, dueAt } = t ? this.next(now) : { dueAt: Infinity };
      if (t && !id && this.dirtyJsonl.size > 0 && this.pauseUntil <= now) {
        await this.flushJsonl(t);
        continue;
      }
      if (!t || !id || this.pauseUntil > now) {
        const until = Math.max(this.pauseUntil, dueAt);
        await this.sleep(until === Infinity ? 60_000 : until - now);
        continue;
      }
      await this.uploadOne(t, id);
    }
  }

  /** Paces sends to `maxBytesPerSec`: each one books its bytes' share of time. */
  private async pace(bytes: number): Promise<void> {
    const rate = this.settings?.maxBytesPerSec ?? Infinity;
    const now = Date.now();
    const start = Math.max(now, this.nextSendAt);
    this.nextSendAt = start + (bytes / rate) * 1000;
    if (start <= now) return;
    // Not woken by new captures, only by stop: the cap holds whatever arrives meanwhile.
    const signal = this.abort.signal;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, start - now);
      signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
    });
  }

  private async uploadOne(t: BlobTarget, id: string): Promise<void> {
    const { store, metrics } = this.opts;
    const r = store.get(id)!;
    const kind = r.upload.state === 'pending' ? 'capture' : 'sidecar';
    try {
      const { client, canCreate } = this.clientFor(t);
      if (canCreate && !this.containerReady) {
        await client.createIfNotExists({ abortSignal: this.abort.signal });
        this.containerReady = true;
      }
      const name = r.upload.blob ?? blobNameOf(this.opts.deviceId, r);
      const revision = r.upload.labelRevision;
      const metadata = metadataOf(r);
      if (kind === 'capture') {
        const frame = await store.readFrame(id);
        if (!frame) throw Object.assign(new Error('frame missing'), { code: 'FRAME_MISSING' });
        await this.pace(frame.length);
        if (this.stopped) return;
        await client.getBlockBlobClient(name).uploadData(frame, {
          blobHTTPHeaders: { blobContentType: r.frame.mediaType },
          metadata,
          abortSignal: this.abort.signal,
        });
        metrics.uploadBytes.inc(frame.length);
      }
      const sidecar = Buffer.from(JSON.stringify({ ...publicSidecar(r), blob: name }, null, 2));
      await this.pace(sidecar.length);
      if (this.stopped) return;
      await client.getBlockBlobClient(`${name}.json`).uploadData(sidecar, {
        blobHTTPHeaders: { blobContentType: 'application/json' },
        metadata: { ...metadata, verdict: r.label?.verdict ?? 'none' },
        abortSignal: this.abort.signal,
      });
      metrics.uploadBytes.inc(sidecar.length);
      const updated = await store.update(id, (rec) => {
        rec.upload.state = 'uploaded';
        rec.upload.blob = name;
        rec.upload.uploadedAt ??= new Date().toISOString();
        rec.upload.uploadedRevision = revision;
        delete rec.upload.lastError;
      });
      this.failures = 0;
      this.notBefore.delete(id);
      this.dirtyJsonl.add(jsonlBlobOf(name));
      metrics.uploads.inc({ kind, outcome: 'uploaded' });
      if (updated && !needsUpload(updated)) this.queue.delete(id);
      if (updated && kind === 'capture') {
        if (!this.settings?.keepAfterUpload) await store.dropFrame(id);
        this.opts.onUploaded?.(updated);
      }
    } catch (err) {
      if (this.stopped) return;
      await this.failed(id, kind, err);
    }
  }

  /** Rewrites the JSONL of each day and camera that changed, from the sidecars of its uploads. */
  private async flushJsonl(t: BlobTarget): Promise<void> {
    const { store, metrics } = this.opts;
    const key = this.dirtyJsonl.values().next().value!;
    const datastorePath = this.settings?.datastorePath ?? '';
    const lines = [];
    for (const r of store.records()) {
      if (r.upload.state === 'uploaded' && r.upload.blob && jsonlBlobOf(r.upload.blob) === key) {
        const line = jsonlLine(r, datastorePath);
        if (line) lines.push(line);
      }
    }
    try {
      const blob = this.clientFor(t).client.getBlockBlobClient(key);
      const existing = await blob
        .downloadToBuffer(undefined, undefined, { abortSignal: this.abort.signal })
        .then(
          (b) => b.toString('utf8'),
          (err: unknown) => {
            if ((err as { statusCode?: number }).statusCode === 404) return '';
            throw err;
          },
        );
      const text = Buffer.from(mergeJsonl(existing, lines));
      await this.pace(text.length);
      if (this.stopped) return;
      await blob.uploadData(text, {
        blobHTTPHeaders: { blobContentType: 'application/x-ndjson' },
        abortSignal: this.abort.signal,
      });
      this.dirtyJsonl.delete(key);
      metrics.uploads.inc({ kind: 'jsonl', outcome: 'uploaded' });
      metrics.uploadBytes.inc(text.length);
    } catch (err) {
      if (this.stopped) return;
      const f = classify(err);
      metrics.uploads.inc({ kind: 'jsonl', outcome: f.permanent ? 'refused' : 'retry' });
      this.failures++;
      this.pauseUntil =
        Date.now() +
        Math.min(
          (this.opts.backoffInitialMs ?? 1000) * 2 ** (this.failures - 1),
          this.opts.backoffMaxMs ?? 300_000,
        );
      // A refused JSONL is dropped from the to-do list (the next upload of that day marks it again).
      if (f.permanent) this.dirtyJsonl.delete(key);
    }
  }

  private async failed(id: string, kind: string, err: unknown): Promise<void> {
    const { store, metrics, logger } = this.opts;
    const f = classify(err);
    const backoff = (n: number): number =>
      Math.min(
        (this.opts.backoffInitialMs ?? 1000) * 2 ** Math.max(0, n - 1),
        this.opts.backoffMaxMs ?? 300_000,
      );
    const lastError = { code: `BLOB_${f.code}`, message: f.message, at: new Date().toISOString() };
    this.opts.onError?.(lastError);
    if (!f.permanent) {
      this.failures++;
      this.pauseUntil = Date.now() + backoff(this.failures);
      metrics.uploads.inc({ kind, outcome: 'retry' });
      logger.warn(
        {
          component: 'capture',
          captureId: id,
          status: f.status,
          code: f.code,
          retryInMs: this.pauseUntil - Date.now(),
        },
        'capture upload failed; retrying',
      );
      return;
    }
    const updated = await store.update(id, (rec) => {
      rec.upload.attempts++;
      rec.upload.lastError = lastError;
      if (rec.upload.attempts >= QUARANTINE_AFTER && rec.upload.state === 'pending')
        rec.upload.state = 'quarantined';
    });
    if (updated?.upload.state === 'quarantined') {
      this.queue.delete(id);
      metrics.uploads.inc({ kind, outcome: 'quarantined' });
      logger.warn(
        { component: 'capture', captureId: id, status: f.status, code: f.code },
        'capture refused by blob storage; quarantined',
      );
      this.opts.onQuarantined?.(updated);
      return;
    }
    metrics.uploads.inc({ kind, outcome: 'refused' });
    this.notBefore.set(id, Date.now() + backoff(updated?.upload.attempts ?? 1));
    // A sidecar refused for good is not retried forever either.
    if (kind === 'sidecar' && (updated?.upload.attempts ?? 0) >= QUARANTINE_AFTER) this.queue.delete(id);
  }
}
