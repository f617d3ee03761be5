import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { ScoringSettings } from '../config.js';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import { InferenceWorker } from './inference-worker.js';
import type { ModelManifest, PartialManifest } from './manifest.js';
import { checkModel, readModelFile, type ModelFile } from './model-loader.js';
import type { FramePrediction } from './prediction.js';
import type { PreparedFrame } from './preprocess.js';
import { blankFrame, type InputTensorData, type UprightRegion } from './tensor.js';
import type { CutRequest, LoadedModel, ProviderAttempt, ValueInfo } from './worker-protocol.js';

/**
 * What a runtime is for: `active` answers the line; `candidate` scores a share of frames off the
 * answer path for a shadow trial. A runtime keeps its role for life; a promotion loads the model
 * again as `active` through the normal swap.
 */
export type RuntimeRole = 'active' | 'candidate';

export interface RuntimeOptions {
  modelPath: string;
  role: RuntimeRole;
  /** Aborting it stops a load in progress: the workers are terminated and load() throws CANCELLED. */
  signal?: AbortSignal;
  /** Manifest fields that take precedence over model.json and the ONNX metadata (the twin's). */
  manifest?: PartialManifest;
  settings: ScoringSettings;
  warmupRuns: number;
  deviceId?: number;
  logger: Logger;
  metrics: Metrics;
  /** Told when loading ends and warm-up begins (for the twin's reported status). */
  onPhase?: (phase: 'loading' | 'warming') => void;
}

/** Everything GET /v1/model and the twin report about a loaded model. */
export interface ModelInfo {
  manifest: ModelManifest;
  sha256: string;
  sizeBytes: number;
  modelPath: string;
  executionProvider: string;
  providerAttempts: ProviderAttempt[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  dynamicBatch: boolean;
  maxBatchSize: number;
  loadedAt: string;
  loadMs: number;
}

/** One frame's share of an inference batch. */
export interface InferredFrame {
  prediction: FramePrediction;
  queueMs: number;
  inferenceMs: number;
  postprocessMs: number;
  batchSize: number;
}

interface Item {
  data: InputTensorData;
  frame: PreparedFrame;
  enqueuedAt: number;
  resolve: (r: InferredFrame) => void;
  reject: (e: Error) => void;
}

/**
 * One loaded model: its inference workers (one onnxruntime session each), the queue of frames
 * waiting for them and the batcher. The engine holds the active runtime and swaps runtimes; a
 * runtime never changes model or settings.
 *
 * Batching: an idle worker takes up to maxBatchSize waiting frames at once. It waits up to
 * maxBatchDelayMs for a batch to fill only while more admitted frames are still being decoded;
 * a lone frame on an idle daemon is dispatched immediately, so batching never adds latency at low
 * load. Small frames decoded in-line on the main thread are never "being decoded" when another
 * frame is queued, so they batch only by piling up while every worker is busy: a daemon that
 * keeps up answers them one by one, which is the lowest latency it can give.
 */
export class ModelRuntime {
  private readonly pending: Item[] = [];
  private readonly idle: InferenceWorker[] = [];
  private readonly workers: InferenceWorker[];
  private readonly frameSize: number;
  private admitted = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private drainWaiters: (() => void)[] = [];
  /** Exponentially weighted inference time per frame, ms; feeds Retry-After. */
  private msPerFrame = 10;

  private constructor(
    readonly info: ModelInfo,
    private readonly opts: RuntimeOptions,
    workers: InferenceWorker[],
    private readonly frameDims: number[],
  ) {
    this.workers = workers;
    this.idle.push(...workers);
    this.frameSize = frameDims.reduce((a, b) => a * b, 1);
  }

  get manifest(): ModelManifest {
    return this.info.manifest;
  }

  get settings(): ScoringSettings {
    return this.opts.settings;
  }

  get role(): RuntimeRole {
    return this.opts.role;
  }

  /** Worker threads still alive: 0 once close() has released every session. */
  get openWorkers(): number {
    return this.workers.filter((w) => !w.dead).length;
  }

  /** Threads this runtime runs: its workers times onnxruntime's intra-op threads per session. */
  get threads(): number {
    const intra = this.opts.settings.intraOpThreads || availableParallelism();
    return this.workers.length * intra;
  }

  /** Frames admitted (decoding or waiting) and not yet handed to a worker. */
  get depth(): number {
    return this.admitted + this.pending.length;
  }

  /** Whether a frame waits for this runtime or every one of its workers is running a batch. */
  get busy(): boolean {
    return this.depth > 0 || this.idle.length === 0;
  }

  /** Seconds a client should wait before retrying when the queue is full. */
  retryAfterSeconds(): number {
    const ms = (this.depth * this.msPerFrame) / Math.max(1, this.workers.length);
    return Math.max(1, Math.ceil(ms / 1000));
  }

  /**
   * Loads, checks and warms a model. Any failure releases whatever was started and throws an
   * EdgeError with the failing step's code; the caller keeps its current model.
   */
  static async load(opts: RuntimeOptions): Promise<ModelRuntime> {
    const started = performance.now();
    const { settings, metrics, logger } = opts;
    const workers: InferenceWorker[] = [];
    const abort = (): void => {
      for (const w of workers) void w.close();
    };
    opts.signal?.addEventListener('abort', abort, { once: true });
    const cancelled = (): void => {
      if (opts.signal?.aborted) throw new EdgeError(ErrorCodes.CANCELLED, 'model load cancelled');
    };
    try {
      cancelled();
      opts.onPhase?.('loading');
      const file = await readModelFile(opts.modelPath);
      const loadOpts = {
        modelPath: opts.modelPath,
        providers: [...settings.executionProviders],
        deviceId: opts.deviceId ?? 0,
        intraOpThreads: settings.intraOpThreads,
        spinning: settings.intraOpSpinning,
      };
      const first = new InferenceWorker(`${opts.role}-inference-0`);
      workers.push(first);
      const loaded = await first.load(loadOpts);
      cancelled();
      const checked = checkModel(file, opts.manifest, loaded.inputs, loaded.outputs);
      for (let i = 1; i < settings.workers; i++) {
        workers.push(new InferenceWorker(`${opts.role}-inference-${i}`));
      }
      await Promise.all(workers.slice(1).map((w) => w.load(loadOpts)));
      await Promise.all(workers.map((w) => w.configure(checked.manifest)));
      const info = runtimeInfo(file, loaded, checked, settings, started);
      const runtime = new ModelRuntime(info, opts, workers, checked.frameDims);
      cancelled();
      opts.onPhase?.('warming');
      await runtime.warmUp(opts.warmupRuns);
      cancelled();
      info.loadMs = performance.now() - started;
      metrics.modelLoads.inc({ outcome: 'success' });
      metrics.modelLoadDuration.observe(info.loadMs / 1000);
      for (const a of loaded.attempts.filter((x) => !x.ok)) {
        logger.warn(
          { component: 'engine', provider: a.provider, reason: a.error },
          'execution provider unavailable, falling back',
        );
      }
      logger.info(
        {
          component: 'engine',
          role: opts.role,
          modelName: info.manifest.name,
          modelVersion: info.manifest.version,
          provider: info.executionProvider,
          workers: workers.length,
          durationMs: Math.round(info.loadMs),
        },
        'model loaded and warmed',
      );
      return runtime;
    } catch (err) {
      await Promise.all(workers.map((w) => w.close()));
      const e = opts.signal?.aborted
        ? new EdgeError(ErrorCodes.CANCELLED, 'model load cancelled')
        : isEdgeError(err)
          ? err
          : new EdgeError(ErrorCodes.MODEL_LOAD_FAILED, err instanceof Error ? err.message : String(err));
      if (e.code !== ErrorCodes.CANCELLED) metrics.modelLoads.inc({ outcome: e.code });
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', abort);
    }
  }

  /** Runs blank frames through every worker at batch 1 and at the largest batch. */
  private async warmUp(runs: number): Promise<void> {
    const spec = this.manifest.input;
    const geometry = {
      frameWidth: spec.width,
      frameHeight: spec.height,
      scaleX: 1,
      scaleY: 1,
      offsetX: 0,
      offsetY: 0,
    };
    const sizes = [...new Set([1, this.info.maxBatchSize])];
    try {
      for (const w of this.workers) {
        for (let r = 0; r < runs; r++) {
          for (const n of sizes) {
            const frames = Array.from({ length: n }, () => blankFrame(spec));
            const { batch, data } = this.assemble(frames);
            const res = await w.run({
              batch,
              dims: this.frameDims,
              data,
              geometries: frames.map(() => geometry),
            });
            checkWarmupOutput(res.predictions);
            this.msPerFrame = res.inferenceMs / batch;
          }
        }
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new EdgeError(ErrorCodes.MODEL_WARMUP_FAILED, `warm-up inference failed: ${message}`, {
        cause: isEdgeError(err) ? err.code : undefined,
      });
    }
  }

  /** How many inference workers this runtime has (each can also cut board regions). */
  get workerCount(): number {
    return this.workers.length;
  }

  /**
   * Cuts upright regions of a shared board into tensors on worker `index`'s thread, beside the
   * event loop (a cut sent while that worker runs a batch waits for it). Fails if the worker died.
   */
  async cutOn(
    index: number,
    board: CutRequest['board'],
    regions: UprightRegion[],
  ): Promise<InputTensorData[]> {
    const worker = this.workers[index];
    if (!worker || worker.dead)
      throw new EdgeError(ErrorCodes.INFERENCE_FAILED, `worker ${index} is not running`);
    const spec = this.manifest.input;
    const buffers = await worker.cut({ board, spec, regions });
    return buffers.map((b) => (spec.dtype === 'float32' ? new Float32Array(b) : new Uint8Array(b)));
  }

  /** Marks a frame as admitted: it counts against the queue while it is being decoded. */
  admit(): void {
    this.admitted++;
  }

  /** An admitted frame failed before reaching the queue. */
  cancel(): void {
    this.admitted--;
    this.pump();
  }

  /** Queues an admitted, pre-processed frame and resolves with its prediction. */
  submit(frame: PreparedFrame): Promise<InferredFrame> {
    this.admitted--;
    return new Promise((resolve, reject) => {
      this.pending.push({ data: frame.data, frame, enqueuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.pending.length > 0) {
      const max = this.info.maxBatchSize;
      const oldest = this.pending[0]!.enqueuedAt;
      const waited = performance.now() - oldest;
      const delay = this.opts.settings.maxBatchDelayMs;
      const full = this.pending.length >= max;
      if (!full && this.admitted > 0 && waited < delay && max > 1) {
        this.timer ??= setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, delay - waited);
        return;
      }
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      const worker = this.idle.pop()!;
      if (worker.dead && !this.closing && this.workers.some((w) => w !== worker && !w.dead)) {
        // Its thread ended while idle: replace it and give the batch to a live worker instead of
        // failing it here. With no live worker left the batch goes to it and fails at once, so
        // frames are answered with an error rather than left waiting on a replacement's load.
        this.replace(worker);
        continue;
      }
      const items = this.pending.splice(0, max);
      this.dispatch(worker, items);
    }
    if (this.role === 'active') this.opts.metrics.queueDepth.set(this.depth);
    this.opts.metrics.runtimeQueueDepth.set({ role: this.role }, this.depth);
  }

  /** Copies frames into one batch tensor, zero-padded to a static batch size. */
  private assemble(frames: InputTensorData[]): { batch: number; data: ArrayBuffer } {
    const batch = this.info.dynamicBatch ? frames.length : this.info.maxBatchSize;
    const float = this.manifest.input.dtype === 'float32';
    const out = float ? new Float32Array(batch * this.frameSize) : new Uint8Array(batch * this.frameSize);
    frames.forEach((f, i) => out.set(f, i * this.frameSize));
    return { batch, data: out.buffer };
  }

  private dispatch(worker: InferenceWorker, items: Item[]): void {
    const now = performance.now();
    const { batch, data } = this.assemble(items.map((i) => i.data));
    const { metrics } = this.opts;
    this.inFlight++;
    const role = { role: this.role };
    const answering = this.role === 'active';
    if (answering) {
      metrics.batchSize.observe(items.length);
      for (const it of items) metrics.queueDuration.observe((now - it.enqueuedAt) / 1000);
    }
    worker
      .run({ batch, dims: this.frameDims, data, geometries: items.map((i) => i.frame.geometry) })
      .then(
        (res) => {
          if (answering) {
            metrics.inferenceDuration.observe(res.inferenceMs / 1000);
            metrics.postprocessDuration.observe(res.postprocessMs / 1000);
          }
          metrics.runtimeInferenceDuration.observe(role, res.inferenceMs / 1000);
          metrics.runtimeFrames.inc(role, items.length);
          this.msPerFrame = 0.8 * this.msPerFrame + (0.2 * res.inferenceMs) / items.length;
          items.forEach((it, i) => {
            it.resolve({
              prediction: res.predictions[i]!,
              queueMs: now - it.enqueuedAt,
              inferenceMs: res.inferenceMs,
              postprocessMs: res.postprocessMs,
              batchSize: items.length,
            });
          });
        },
        (err: Error) => {
          this.opts.logger.error({ component: 'engine', err, batch: items.length }, 'inference failed');
          const e = isEdgeError(err) ? err : new EdgeError(ErrorCodes.INFERENCE_FAILED, err.message);
          for (const it of items) it.reject(e);
        },
      )
      .finally(() => {
        this.inFlight--;
        if (worker.dead) this.replace(worker);
        else this.idle.push(worker);
        this.pump();
        if (this.inFlight === 0 && this.pending.length === 0 && this.admitted === 0) {
          for (const w of this.drainWaiters.splice(0)) w();
        }
      });
  }

  /** A crashed worker is replaced so the pool keeps its size; its batch already failed. */
  private replace(dead: InferenceWorker): void {
    const idx = this.workers.indexOf(dead);
    if (idx < 0 || this.closing) return;
    const { logger, settings } = this.opts;
    const fresh = new InferenceWorker(`${this.role}-inference-${idx}`);
    this.workers[idx] = fresh;
    logger.error({ component: 'engine', worker: idx }, 'inference worker died; starting a replacement');
    fresh
      .load({
        modelPath: this.info.modelPath,
        providers: [this.info.executionProvider],
        deviceId: this.opts.deviceId ?? 0,
        intraOpThreads: settings.intraOpThreads,
        spinning: settings.intraOpSpinning,
      })
      .then(() => fresh.configure(this.manifest))
      .then(
        () => {
          this.idle.push(fresh);
          this.pump();
        },
        (err: unknown) => logger.error({ component: 'engine', err }, 'replacement worker failed to load'),
      );
  }

  /** Resolves once no frame of this runtime is queued, decoding or being inferred. */
  drained(): Promise<void> {
    if (this.inFlight === 0 && this.pending.length === 0 && this.admitted === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Finishes every frame already accepted, then releases the sessions. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.drained();
      if (this.timer) clearTimeout(this.timer);
      await Promise.all(this.workers.map((w) => w.close()));
    })();
    return this.closing;
  }
}

function runtimeInfo(
  file: ModelFile,
  loaded: LoadedModel,
  checked: ReturnType<typeof checkModel>,
  settings: ScoringSettings,
  started: number,
): ModelInfo {
  const dynamicBatch = checked.staticBatch === undefined;
  return {
    manifest: checked.manifest,
    sha256: file.sha256,
    sizeBytes: file.sizeBytes,
    modelPath: file.modelPath,
    executionProvider: loaded.provider,
    providerAttempts: loaded.attempts,
    inputs: loaded.inputs,
    outputs: loaded.outputs,
    dynamicBatch,
    maxBatchSize: dynamicBatch ? settings.maxBatchSize : checked.staticBatch!,
    loadedAt: new Date().toISOString(),
    loadMs: performance.now() - started,
  };
}

function checkWarmupOutput(predictions: FramePrediction[]): void {
  for (const p of predictions) {
    for (const c of p.classification ?? []) {
      if (!Number.isFinite(c.score)) throw new Error(`non-finite score for ${c.label}`);
    }
    for (const d of p.detections ?? []) {
      if (!Number.isFinite(d.score)) throw new Error(`non-finite detection score for ${d.label}`);
    }
    if (p.anomaly && !Number.isFinite(p.anomaly.score)) throw new Error('non-finite anomaly score');
  }
}
