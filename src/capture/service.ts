import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { isEdgeError } from '../errors.js';
import { captureBytes, type PostedFrame } from './encode.js';
import { CaptureMetrics } from './metrics.js';
import type { CaptureRecord, HumanLabel } from './record.js';
import { CaptureRules, type RuleInput } from './rules.js';
import { effectiveCapture, type CaptureSettings, type DesiredCapture } from './settings.js';
import { CaptureStore } from './store.js';
import { CaptureUploader, blobNameOf } from './uploader.js';

/** The fields of a scored frame capture reads (the engine's ScoredFrame fits this shape). */
export interface CapturableFrame extends RuleInput {
  frameId: string;
  frame: PostedFrame;
  model: { name: string; version: string; sha256: string };
  task: string;
  prediction: RuleInput['prediction'] & CaptureRecord['answer'];
  geometry: { frameWidth: number; frameHeight: number };
  at: string;
}

/** The upstream `captures` message (README, "Upstream messages"). */
export interface CaptureMessage {
  id: string;
  frameId: string;
  cameraId: string | null;
  reason: string;
  model: { name: string; version: string };
  blob: string | null;
  at: string;
}

/** Reported `capture` (README, "Capture for retraining"); never carries a secret. */
export interface CaptureReport {
  enabled: boolean;
  stored: number;
  bytes: number;
  pendingUpload: number;
  uploaded: number;
  quarantined: number;
  lastError: { code: string; message: string; at: string } | null;
}

export interface CaptureServiceOptions {
  /** The store's directory (DATA_DIR/captures). */
  dir: string;
  logger: Logger;
  registry: Registry;
  /** Told of every new capture (the `captures` output) and every change of the reported state. */
  onCaptured?: (m: CaptureMessage) => void;
  onReport?: (r: CaptureReport) => void;
  /** First segment of blob names. */
  deviceId: string;
  /** CAPTURE_BLOB_CONNECTION_STRING (a secret: never logged or reported). */
  connectionString?: string;
  /** Upload retry backoff (tests shorten it). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  random?: () => number;
}

/**
 * Capture for retraining (docs/capture.md): a scored-frame stream subscriber that keeps the frames
 * the rules choose, under hourly quotas and a disk budget, with a sidecar for a human label. It
 * owns the capture settings in force and the reported `capture` state.
 */
export class CaptureService {
  readonly store: CaptureStore;
  readonly metrics: CaptureMetrics;
  readonly uploader: CaptureUploader;
  private readonly rules: CaptureRules;
  private settingsInForce: CaptureSettings = effectiveCapture(undefined);
  private lastError: CaptureReport['lastError'] = null;
  private uploadedCount = 0;
  private reportTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: CaptureServiceOptions) {
    this.metrics = new CaptureMetrics(opts.registry);
    this.rules = new CaptureRules(opts.random);
    this.store = new CaptureStore({
      dir: opts.dir,
      logger: opts.logger,
      onEvicted: (r) =>
        this.metrics.evicted.inc({ reason: r.reason, uploaded: String(r.upload.state === 'uploaded') }),
    });
    this.uploader = new CaptureUploader({
      store: this.store,
      metrics: this.metrics,
      logger: opts.logger,
      deviceId: opts.deviceId,
      connectionString: opts.connectionString,
      backoffInitialMs: opts.backoffInitialMs,
      backoffMaxMs: opts.backoffMaxMs,
      onUploaded: () => {
        this.uploadedCount++;
        this.scheduleReport();
      },
      onQuarantined: () => this.scheduleReport(),
      onError: (e) => {
        this.lastError = { ...e, at: new Date().toISOString() };
        this.scheduleReport();
      },
    });
  }

  get settings(): CaptureSettings {
    return this.settingsInForce;
  }

  async start(): Promise<void> {
    await this.store.init();
    // Uploads wait for the first desired state (setSettings): what a previous process left
    // pending must go where, and as, the twin now says (target, bandwidth, keepAfterUpload).
    this.uploader.start();
    this.report();
  }

  /** Applies a validated desired block (or its absence); takes effect with the next frame. */
  async setSettings(desired: DesiredCapture | undefined): Promise<void> {
    this.settingsInForce = effectiveCapture(desired);
    this.uploader.configure(this.settingsInForce.upload);
    await this.store.enforce(this.settingsInForce);
    this.report();
  }

  /** The stream handler: decides, encodes off-thread, stores. Never throws into the stream. */
  async handle(f: CapturableFrame): Promise<void> {
    const s = this.settingsInForce;
    if (!s.enabled) return;
    const d = this.rules.decide(f, s);
    if (!d.take) {
      if (d.skipped && d.reason) this.metrics.skipped.inc({ reason: d.reason, why: d.skipped });
      return;
    }
    try {
      const bytes = await captureBytes(f.frame);
      const id = CaptureStore.newId();
      const rule = s.rules.find((r) => r.reason === d.reason);
      const record: CaptureRecord = {
        schema: 1,
        id,
        frameId: f.frameId,
        cameraId: f.cameraId,
        capturedAt: new Date().toISOString(),
        scoredAt: f.at,
        reason: d.reason,
        rule: { reason: d.reason, rate: d.rate, ...(rule?.scoreBand ? { scoreBand: rule.scoreBand } : {}) },
        frame: {
          file: `${id}.${bytes.ext}`,
          ext: bytes.ext,
          mediaType: bytes.mediaType,
          bytes: bytes.data.length,
          width: f.geometry.frameWidth,
          height: f.geometry.frameHeight,
          ...(f.frame.raw ? { raw: { ...f.frame.raw } } : {}),
        },
        model: { ...f.model },
        task: f.task,
        answer: {
          defect: f.prediction.defect,
          ...(f.prediction.classification ? { classification: f.prediction.classification } : {}),
          ...(f.prediction.detections ? { detections: f.prediction.detections } : {}),
        },
        label: null,
        upload: {
          state: s.upload.target === 'none' ? 'local' : 'pending',
          attempts: 0,
          labelRevision: 0,
          uploadedRevision: 0,
        },
      };
      if (!(await this.store.add(record, bytes.data, s))) {
        this.rules.release(d.camera, d.label);
        this.metrics.skipped.inc({ reason: d.reason, why: 'budget' });
        return;
      }
      this.metrics.captured.inc({ reason: d.reason });
      this.opts.onCaptured?.({
        id,
        frameId: f.frameId,
        cameraId: f.cameraId,
        reason: d.reason,
        model: { name: f.model.name, version: f.model.version },
        blob: record.upload.state === 'pending' ? blobNameOf(this.opts.deviceId, record) : null,
        at: record.capturedAt,
      });
      this.uploader.notify(record);
    } catch (err) {
      this.rules.release(d.camera, d.label);
      this.metrics.skipped.inc({ reason: d.reason, why: 'error' });
      this.fail(err);
    } finally {
      this.scheduleReport();
    }
  }

  /** At most one recount a second under a flood of captures. */
  private scheduleReport(): void {
    if (this.reportTimer) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined;
      this.report();
    }, 1000);
    this.reportTimer.unref();
  }

  /** Stops uploading (an upload in flight is aborted and sent again next time), reports the final state. */
  async stop(): Promise<void> {
    await this.uploader.stop();
    if (this.reportTimer) clearTimeout(this.reportTimer);
    this.reportTimer = undefined;
    this.report();
  }

  /** Records a human label; undefined when there is no such capture. */
  async label(id: string, label: HumanLabel): Promise<CaptureRecord | undefined> {
    const r = await this.store.setLabel(id, label);
    if (r) {
      this.uploader.notify(r);
      this.report();
    }
    return r;
  }

  /** Keeps the last error for the reported state (codes and messages only, never secrets). */
  fail(err: unknown): void {
    const code = isEdgeError(err) ? err.code : 'EDGE_ERR_INTERNAL';
    const message = isEdgeError(err) ? err.message : 'capture failed';
    this.lastError = { code, message, at: new Date().toISOString() };
    this.opts.logger.warn({ component: 'capture', code, err }, 'capture failed');
    this.report();
  }

  /** The reported `capture` state, recomputed from the store (its one owner of counts). */
  report(): CaptureReport {
    let pending = 0;
    let quarantined = 0;
    for (const r of this.store.records()) {
      if (
        r.upload.state === 'pending' ||
        (r.upload.state === 'uploaded' && r.upload.labelRevision > r.upload.uploadedRevision)
      )
        pending++;
      else if (r.upload.state === 'quarantined') quarantined++;
    }
    this.metrics.storeBytes.set(this.store.bytes);
    this.metrics.storeItems.set(this.store.count);
    this.metrics.queueDepth.set(pending);
    const rep: CaptureReport = {
      enabled: this.settingsInForce.enabled,
      stored: this.store.count,
      bytes: this.store.bytes,
      pendingUpload: pending,
      uploaded: this.uploadedCount,
      quarantined,
      lastError: this.lastError,
    };
    this.opts.onReport?.(rep);
    return rep;
  }

  static dirIn(dataDir: string): string {
    return path.join(dataDir, 'captures');
  }
}
