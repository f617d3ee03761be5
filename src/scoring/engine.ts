import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import { FrameStream } from './frame-stream.js';
import { ModelRuntime, type ModelInfo, type RuntimeOptions, type RuntimeRole } from './model-runtime.js';
import type { FrameGeometry } from './geometry.js';
import type { FramePrediction } from './prediction.js';
import type { FrameInput } from './preprocess.js';
import { inferFrame } from './infer-frame.js';
import { scoreBoard, type BoardResult, type RegionResult } from './board.js';
import type { Region } from './regions.js';

export interface ScoreOutcome {
  model: { name: string; version: string };
  task: ModelInfo['manifest']['task'];
  prediction: FramePrediction;
  timing: { queueMs: number; preprocessMs: number; inferenceMs: number; postprocessMs: number };
  batchSize: number;
  /** The frame as posted and how it maps to the model input. */
  frame: FrameGeometry;
}

/** Who sent a frame and when it arrived; travels with the frame into the scored-frame stream. */
export interface FrameMeta {
  frameId: string;
  cameraId: string | null;
  /** performance.now() when the request began; the stream's totalMs counts from here. */
  receivedAt?: number;
}

/**
 * A scored frame as the engine publishes it to its subscribers (docs/architecture.md): the frame
 * bytes as posted, who sent it, the model that answered, the prediction and the timings.
 */
export interface ScoredFrame extends FrameMeta {
  frame: FrameInput;
  role: RuntimeRole;
  model: { name: string; version: string; sha256: string };
  task: ModelInfo['manifest']['task'];
  prediction: FramePrediction;
  geometry: FrameGeometry;
  timing: ScoreOutcome['timing'] & { totalMs: number };
  batchSize: number;
  /** When the answer was ready (ISO 8601). */
  at: string;
  /** A board scored by regions: one result per region (the prediction is the board verdict). */
  regions?: RegionResult[];
  /** The layout the regions came from, if any. */
  layout?: string;
}

export type EngineStatus = 'starting' | 'ready' | 'stopping' | 'stopped';

export type ActivateOptions = Pick<RuntimeOptions, 'modelPath' | 'manifest' | 'onPhase'> & {
  settings?: Config['scoring'];
  /** The runtime's role; `active` (the default) answers the line. */
  role?: RuntimeRole;
  /** Cancels this load (CANCELLED); stop() cancels every load anyway. */
  signal?: AbortSignal;
};

/**
 * The scoring engine: admission control, pre-processing and the model runtimes, one per role
 * (`active`, and a `candidate` during a shadow trial), each with its own workers. Frames are
 * pre-processed for, and scored by, the runtime that held the role when they were admitted, so a
 * swap never mixes one model's tensors with another's session; the old runtime drains, then
 * closes. Every frame that answers the line is published to `frames`, the scored-frame stream.
 */
export class ScoringEngine {
  private readonly runtimes = new Map<RuntimeRole, ModelRuntime>();
  /** Loads in progress; stop() cancels them so a slow model never holds up a shutdown. */
  private readonly loads = new Set<Promise<unknown>>();
  private readonly loadAbort = new AbortController();
  private stopping: Promise<void> | undefined;
  private status: EngineStatus = 'starting';
  /** Frames refused with 429 since start (for the `stats` output). */
  rejectedFrames = 0;
  /** Every frame that answered the line, after its answer is ready. */
  readonly frames: FrameStream<ScoredFrame>;

  constructor(
    private readonly config: Readonly<Config>,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.frames = new FrameStream<ScoredFrame>({
      logger,
      sizeOf: (f) => f.frame.body.byteLength,
      onDropped: (subscriber) => metrics.streamDropped.inc({ subscriber }),
      onFailed: (subscriber) => metrics.streamFailures.inc({ subscriber }),
    });
  }

  get ready(): boolean {
    return this.status === 'ready' && this.runtimes.has('active');
  }

  get state(): { status: EngineStatus; model: ModelInfo | undefined } {
    return { status: this.status, model: this.runtimes.get('active')?.info };
  }

  /** The model a role's runtime serves, if any. */
  modelOf(role: RuntimeRole): ModelInfo | undefined {
    return this.runtimes.get(role)?.info;
  }

  /** The runtime holding a role (its queue, workers and threads), if any. */
  runtimeOf(role: RuntimeRole): ModelRuntime | undefined {
    return this.runtimes.get(role);
  }

  /** Scoring settings of the active runtime (environment defaults until a model is active). */
  get settings(): Config['scoring'] {
    return this.runtimes.get('active')?.settings ?? this.config.scoring;
  }

  /**
   * Builds a runtime beside the one holding the role, checks and warms it, then gives it the role.
   * Frames in flight finish on the old runtime, which is released afterwards. A failure leaves the
   * current runtime serving and rethrows; stop() cancels a load in progress (CANCELLED).
   */
  async activate(opts: ActivateOptions): Promise<ModelInfo> {
    const role = opts.role ?? 'active';
    if (this.stopping) throw new EdgeError(ErrorCodes.NOT_READY, 'the daemon is stopping');
    const loading = ModelRuntime.load({
      modelPath: opts.modelPath,
      role,
      signal: opts.signal ? AbortSignal.any([this.loadAbort.signal, opts.signal]) : this.loadAbort.signal,
      ...(opts.manifest ? { manifest: opts.manifest } : {}),
      ...(opts.onPhase ? { onPhase: opts.onPhase } : {}),
      settings: opts.settings ?? this.config.scoring,
      deviceId: this.config.gpuDeviceId,
      warmupRuns: this.config.warmupRuns,
      logger: this.logger,
      metrics: this.metrics,
    });
    this.loads.add(loading);
    let runtime: ModelRuntime;
    try {
      runtime = await loading;
    } finally {
      this.loads.delete(loading);
    }
    if (this.stopping) {
      await runtime.close();
      throw new EdgeError(ErrorCodes.NOT_READY, 'the daemon is stopping');
    }
    const previous = this.runtimes.get(role);
    this.runtimes.set(role, runtime);
    this.account(runtime);
    if (role === 'active') {
      this.status = 'ready';
      const { manifest, sha256, executionProvider } = runtime.info;
      this.metrics.modelInfo.reset();
      this.metrics.modelInfo.set(
        { name: manifest.name, version: manifest.version, sha256, provider: executionProvider },
        1,
      );
      this.metrics.ready.set(1);
      this.metrics.queueCapacity.set(runtime.settings.maxQueue);
      this.metrics.modelSwaps.inc({ outcome: 'success' });
    }
    if (previous) this.closeQuietly(previous);
    return runtime.info;
  }

  /** Ends the runtime holding `role` (a finished shadow trial); its frames in flight finish first. */
  async release(role: RuntimeRole): Promise<void> {
    const runtime = this.runtimes.get(role);
    if (!runtime) return;
    this.runtimes.delete(role);
    this.unaccount(role);
    await runtime.close();
  }

  /** Per-runtime memory and thread figures, labelled by role. */
  private account(runtime: ModelRuntime): void {
    const role = { role: runtime.role };
    const workers = runtime.settings.workers;
    this.metrics.runtimeWorkers.set(role, workers);
    this.metrics.runtimeThreads.set(role, runtime.threads);
    this.metrics.runtimeModelBytes.set(role, runtime.info.sizeBytes * workers);
  }

  private unaccount(role: RuntimeRole): void {
    const { runtimeWorkers, runtimeThreads, runtimeModelBytes } = this.metrics;
    for (const g of [runtimeWorkers, runtimeThreads, runtimeModelBytes]) g.remove({ role });
  }

  private closeQuietly(runtime: ModelRuntime): void {
    runtime
      .close()
      .catch((err: unknown) =>
        this.logger.error({ component: 'engine', err, role: runtime.role }, 'closing a model failed'),
      );
  }

  /**
   * Scores one frame with the active model and publishes it to the scored-frame stream once the
   * answer is ready. Throws EdgeError (NOT_READY, QUEUE_FULL, frame errors, INFERENCE_FAILED).
   */
  async score(frame: FrameInput, meta: FrameMeta): Promise<ScoreOutcome> {
    const runtime = this.runtimes.get('active');
    if (!runtime || this.status !== 'ready') {
      throw new EdgeError(
        ErrorCodes.NOT_READY,
        this.stopping ? 'the daemon is stopping' : 'no model is ready',
      );
    }
    const outcome = await this.scoreOn(runtime, frame);
    this.record(outcome.prediction, outcome.task);
    const { info } = runtime;
    this.frames.publish({
      ...meta,
      frame,
      role: runtime.role,
      model: { ...outcome.model, sha256: info.sha256 },
      task: outcome.task,
      prediction: outcome.prediction,
      geometry: outcome.frame,
      timing: {
        ...outcome.timing,
        totalMs: meta.receivedAt === undefined ? 0 : performance.now() - meta.receivedAt,
      },
      batchSize: outcome.batchSize,
      at: new Date().toISOString(),
    });
    return outcome;
  }

  /**
   * Scores every region of a board with the active model: one decode, the regions admitted
   * together against the queue and batched together, then one scored frame per board published
   * with its regions (docs/architecture.md, "The path of a frame").
   */
  async scoreRegions(
    frame: FrameInput,
    regions: readonly Region[],
    meta: FrameMeta & { layout?: string },
  ): Promise<BoardResult & { model: ScoreOutcome['model']; task: ScoreOutcome['task'] }> {
    const runtime = this.runtimes.get('active');
    if (!runtime || this.status !== 'ready') {
      throw new EdgeError(
        ErrorCodes.NOT_READY,
        this.stopping ? 'the daemon is stopping' : 'no model is ready',
      );
    }
    let board: BoardResult;
    try {
      board = await scoreBoard(
        runtime,
        frame,
        regions,
        { maxPixels: this.config.maxFramePixels },
        this.metrics,
      );
    } catch (err) {
      if (err instanceof EdgeError && err.code === ErrorCodes.QUEUE_FULL) this.rejectedFrames++;
      throw err;
    }
    const { manifest, sha256 } = runtime.info;
    for (const r of board.regions) this.record(r.prediction, manifest.task);
    const prediction: FramePrediction = { defect: board.defect };
    this.frames.publish({
      ...meta,
      frame,
      role: runtime.role,
      model: { name: manifest.name, version: manifest.version, sha256 },
      task: manifest.task,
      prediction,
      geometry: {
        frameWidth: board.width,
        frameHeight: board.height,
        scaleX: 1,
        scaleY: 1,
        offsetX: 0,
        offsetY: 0,
      },
      timing: {
        queueMs: 0,
        preprocessMs: board.timing.decodeMs + board.timing.preprocessMs,
        inferenceMs: board.timing.inferenceMs,
        postprocessMs: 0,
        totalMs: meta.receivedAt === undefined ? 0 : performance.now() - meta.receivedAt,
      },
      batchSize: Math.max(0, ...board.regions.map((r) => r.batchSize)),
      at: new Date().toISOString(),
      regions: board.regions,
    });
    return { ...board, model: { name: manifest.name, version: manifest.version }, task: manifest.task };
  }

  /**
   * Scores a frame with the runtime holding `role`, off the answer path: nothing is published or
   * counted as a line answer. Throws NOT_READY when no runtime holds the role.
   */
  async scoreAs(role: RuntimeRole, frame: FrameInput): Promise<ScoreOutcome> {
    const runtime = this.runtimes.get(role);
    if (!runtime || this.stopping) throw new EdgeError(ErrorCodes.NOT_READY, `no ${role} model is loaded`);
    return this.scoreOn(runtime, frame);
  }

  private async scoreOn(runtime: ModelRuntime, frame: FrameInput): Promise<ScoreOutcome> {
    if (runtime.depth >= runtime.settings.maxQueue) {
      if (runtime.role === 'active') {
        this.metrics.queueRejections.inc();
        this.rejectedFrames++;
      }
      throw new EdgeError(ErrorCodes.QUEUE_FULL, 'the scoring queue is full', {
        retryAfterSeconds: runtime.retryAfterSeconds(),
        depth: runtime.depth,
      });
    }
    const { prepared, result } = await inferFrame(runtime, frame, { maxPixels: this.config.maxFramePixels });
    if (runtime.role === 'active') this.metrics.preprocessDuration.observe(prepared.preprocessMs / 1000);
    const { manifest } = runtime;
    return {
      model: { name: manifest.name, version: manifest.version },
      task: manifest.task,
      prediction: result.prediction,
      timing: {
        queueMs: result.queueMs,
        preprocessMs: prepared.preprocessMs,
        inferenceMs: result.inferenceMs,
        postprocessMs: result.postprocessMs,
      },
      batchSize: result.batchSize,
      frame: prepared.geometry,
    };
  }

  private record(p: FramePrediction, task: string): void {
    this.metrics.frames.inc({ defect: String(p.defect) });
    if (task === 'classification' && p.classification?.[0])
      this.metrics.predictions.inc({ label: p.classification[0].label });
    for (const d of p.detections ?? []) this.metrics.predictions.inc({ label: d.label });
  }

  /**
   * Stops admitting frames, cancels loads in progress, finishes the frames accepted and releases
   * every runtime's sessions. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.status = 'stopping';
      this.metrics.ready.set(0);
      const started = performance.now();
      this.loadAbort.abort();
      await Promise.allSettled([...this.loads]);
      await Promise.all([...this.runtimes.values()].map((r) => r.close()));
      for (const role of this.runtimes.keys()) this.unaccount(role);
      this.runtimes.clear();
      this.status = 'stopped';
      this.logger.info(
        { component: 'engine', durationMs: Math.round(performance.now() - started) },
        'engine stopped',
      );
    })();
    return this.stopping;
  }
}
