import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import { ModelRuntime, type FrameResult, type ModelInfo, type RuntimeOptions } from './model-runtime.js';
import type { FrameGeometry } from './geometry.js';
import type { FramePrediction } from './prediction.js';
import { prepareFrame, type FrameInput } from './preprocess.js';

export interface ScoreOutcome {
  model: { name: string; version: string };
  task: ModelInfo['manifest']['task'];
  prediction: FramePrediction;
  timing: { queueMs: number; preprocessMs: number; inferenceMs: number; postprocessMs: number };
  batchSize: number;
  /** The frame as posted and how it maps to the model input. */
  frame: FrameGeometry;
}

export type EngineStatus = 'starting' | 'ready' | 'stopping' | 'stopped' | 'failed';

/**
 * The scoring engine: admission control, pre-processing and the active model runtime. Frames are
 * pre-processed for, and scored by, the runtime that was active when they were admitted, so a swap
 * never mixes one model's tensors with another's session; the old runtime drains, then closes.
 */
export class ScoringEngine {
  private active: ModelRuntime | undefined;
  private stopping: Promise<void> | undefined;
  private status: EngineStatus = 'starting';
  private lastError: EdgeError | undefined;
  /** Frames refused with 429 since start (for the `stats` output). */
  rejectedFrames = 0;

  constructor(
    private readonly config: Readonly<Config>,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {}

  get ready(): boolean {
    return this.status === 'ready' && this.active !== undefined;
  }

  get state(): { status: EngineStatus; model: ModelInfo | undefined; lastError: EdgeError | undefined } {
    return { status: this.status, model: this.active?.info, lastError: this.lastError };
  }

  /** Scoring settings of the active runtime (environment defaults until a model is active). */
  get settings(): Config['scoring'] {
    return this.active?.settings ?? this.config.scoring;
  }

  /** Records why the latest activation failed while the active model keeps serving. */
  noteFailure(err: EdgeError): void {
    this.lastError = err;
    if (!this.active && !this.stopping) this.status = 'failed';
    this.metrics.modelSwaps.inc({ outcome: err.code });
  }

  /**
   * Builds a runtime beside the active one, checks and warms it, then makes it active. Frames in
   * flight finish on the old runtime, which is released afterwards. A failure leaves the active
   * runtime serving and rethrows.
   */
  async activate(
    opts: Pick<RuntimeOptions, 'modelPath' | 'manifest' | 'onPhase'> & { settings?: Config['scoring'] },
  ): Promise<ModelInfo> {
    const runtime = await ModelRuntime.load({
      modelPath: opts.modelPath,
      ...(opts.manifest ? { manifest: opts.manifest } : {}),
      ...(opts.onPhase ? { onPhase: opts.onPhase } : {}),
      settings: opts.settings ?? this.config.scoring,
      deviceId: this.config.gpuDeviceId,
      warmupRuns: this.config.warmupRuns,
      logger: this.logger,
      metrics: this.metrics,
    });
    if (this.stopping) {
      await runtime.close();
      throw new EdgeError(ErrorCodes.NOT_READY, 'the daemon is stopping');
    }
    const previous = this.active;
    this.active = runtime;
    this.status = 'ready';
    this.lastError = undefined;
    const { manifest, sha256, executionProvider } = runtime.info;
    this.metrics.modelInfo.reset();
    this.metrics.modelInfo.set(
      { name: manifest.name, version: manifest.version, sha256, provider: executionProvider },
      1,
    );
    this.metrics.ready.set(1);
    this.metrics.queueCapacity.set(runtime.settings.maxQueue);
    this.metrics.modelSwaps.inc({ outcome: 'success' });
    if (previous) {
      previous
        .close()
        .catch((err: unknown) =>
          this.logger.error({ component: 'engine', err }, 'closing the previous model failed'),
        );
    }
    return runtime.info;
  }

  /** Scores one frame. Throws EdgeError (NOT_READY, QUEUE_FULL, frame errors, INFERENCE_FAILED). */
  async score(frame: FrameInput): Promise<ScoreOutcome> {
    const runtime = this.active;
    if (!runtime || this.status !== 'ready') {
      throw new EdgeError(
        ErrorCodes.NOT_READY,
        this.stopping ? 'the daemon is stopping' : 'no model is ready',
      );
    }
    if (runtime.depth >= runtime.settings.maxQueue) {
      this.metrics.queueRejections.inc();
      this.rejectedFrames++;
      throw new EdgeError(ErrorCodes.QUEUE_FULL, 'the scoring queue is full', {
        retryAfterSeconds: runtime.retryAfterSeconds(),
        depth: runtime.depth,
      });
    }
    runtime.admit();
    let prepared;
    try {
      prepared = await prepareFrame(frame, runtime.manifest.input, { maxPixels: this.config.maxFramePixels });
    } catch (err) {
      runtime.cancel();
      throw err;
    }
    this.metrics.preprocessDuration.observe(prepared.preprocessMs / 1000);
    const result: FrameResult = await runtime.submit(prepared);
    this.record(result.prediction, runtime.manifest.task);
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

  /** Stops admitting frames, finishes those accepted and releases the sessions. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.status = 'stopping';
      this.metrics.ready.set(0);
      const started = performance.now();
      await this.active?.close();
      this.status = 'stopped';
      this.logger.info(
        { component: 'engine', durationMs: Math.round(performance.now() - started) },
        'engine stopped',
      );
    })();
    return this.stopping;
  }
}
