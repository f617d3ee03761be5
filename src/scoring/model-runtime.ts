import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { ScoringSettings } from '../config.js';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import { InferenceWorker } from './inference-worker.js';
import type { ModelManifest } from './manifest.js';
import type { DeferredFrame, PreparedFrame } from './preprocess.js';
import type { FrameGeometry } from './geometry.js';
import {
  assembleBatch,
  packPngs,
  warmUpWorkers,
  type BatchShape,
  type CutJob,
  type InferredFrame,
  type Item,
  type QueuedCut,
} from './batches.js';
import type { InputTensorData, UprightRegion } from './tensor.js';
import type { SharedBoard, WorkerReply } from './worker-protocol.js';
import {
  loadRuntime,
  workerLoadOptions,
  type ModelInfo,
  type RuntimeOptions,
  type RuntimeRole,
} from './runtime-load.js';

export type { ModelInfo, RuntimeOptions, RuntimeRole };

export type { CutJob, InferredFrame };

/** Regions in one cut job at most: enough to batch well, few enough to share a board's tail. */
const CUT_BATCH = 16;

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
 *
 * Queued ahead: while every worker runs a batch, one ready batch (a full batch of frames, or a
 * cut job already cut) may wait on a worker's thread behind the one it runs, so the worker starts
 * it the moment the first ends instead of once this thread, busy with requests, has heard of that
 * and sent the next (docs/architecture.md, "The path of a frame"). Never more than one, and never
 * a partial batch: that would trade batch size for nothing.
 */
export class ModelRuntime {
  private readonly pending: Item[] = [];
  private readonly cuts: QueuedCut[] = [];
  /** Regions in `cuts`. */
  private cutRegions = 0;
  private readonly idle: InferenceWorker[] = [];
  /** Batches sent to each worker and not yet answered: 1, or 2 with one queued ahead. */
  private readonly sent = new Map<InferenceWorker, number>();
  private readonly workers: InferenceWorker[];
  private readonly frameSize: number;
  private readonly shape: BatchShape;
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
    this.shape = { spec: info.manifest.input, dims: frameDims, batchFor: (n) => this.batchFor(n) };
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
    return this.admitted + this.pending.length + this.cutRegions;
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
  static load(opts: RuntimeOptions): Promise<ModelRuntime> {
    return loadRuntime(opts, (info, workers, frameDims) => new ModelRuntime(info, opts, workers, frameDims));
  }

  /** Runs blank frames through every worker at batch 1 and at the largest batch (for `load`). */
  async warmUp(runs: number): Promise<void> {
    try {
      this.msPerFrame = await warmUpWorkers(this.workers, this.shape, this.info.maxBatchSize, runs);
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

  /** Regions one cut job should hold: a full batch, up to CUT_BATCH. */
  get cutBatchSize(): number {
    return Math.min(CUT_BATCH, this.info.maxBatchSize);
  }

  /**
   * Queues admitted upright regions of a shared board to be cut into one batch and inferred by the
   * next free worker, so their tensors never cross threads (docs/architecture.md, "The path of a
   * frame"). At most `cutBatchSize` regions.
   */
  submitCut(board: SharedBoard, regions: UprightRegion[], geometries: FrameGeometry[]): CutJob {
    let settle!: Pick<QueuedCut, 'resolve' | 'reject'>;
    const result = new Promise<(InferredFrame & { preprocessMs: number })[]>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const job: QueuedCut = {
      board,
      regions,
      geometries,
      enqueuedAt: performance.now(),
      result,
      ...settle,
      retried: false,
    };
    this.admitted -= regions.length;
    this.cutRegions += regions.length;
    this.cuts.push(job);
    this.pump();
    return job;
  }

  /**
   * Claims a queued job no worker has started, for the caller to cut on its own thread into the
   * batch tensor returned (then `cutDone`, or `cutFailed`); undefined when a worker has it already.
   */
  claim(job: CutJob): InputTensorData | undefined {
    const at = this.cuts.indexOf(job as QueuedCut);
    if (at < 0) return undefined;
    this.cuts.splice(at, 1);
    const size = this.batchFor(job.regions.length) * this.frameSize;
    return this.manifest.input.dtype === 'float32' ? new Float32Array(size) : new Uint8Array(size);
  }

  /** A claimed job is cut: it goes to the head of the queue, its regions being ready to infer. */
  cutDone(job: CutJob, batch: InputTensorData, ms: number): void {
    const queued = job as QueuedCut;
    queued.cut = { batch: this.batchFor(job.regions.length), data: batch.buffer as ArrayBuffer, ms };
    this.cuts.unshift(queued);
    this.pump();
  }

  /** A claimed job could not be cut: it fails with that error. */
  cutFailed(job: CutJob, err: Error): void {
    this.cutRegions -= job.regions.length;
    (job as QueuedCut).reject(err);
    this.pump();
  }

  /**
   * Takes a cut job nobody has started out of the queue for good (its board failed): its regions
   * count as admitted again, for the caller to cancel. False when a worker has it already.
   */
  takeBack(job: CutJob): boolean {
    const at = this.cuts.indexOf(job as QueuedCut);
    if (at < 0) return false;
    this.cuts.splice(at, 1);
    this.cutRegions -= job.regions.length;
    this.admitted += job.regions.length;
    return true;
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
    return this.enqueue({ data: frame.data, frame }) as Promise<InferredFrame>;
  }

  /**
   * Whether small PNGs are better left to the workers to decode into their batches (`submitPng`):
   * on the CPU provider, where the event loop, not the model, sets the pace of small frames. On a
   * GPU a worker's decode would hold the device idle, so the event loop keeps decoding them.
   */
  get decodesPngs(): boolean {
    return this.info.executionProvider === 'cpu';
  }

  /**
   * Queues an admitted small PNG (preprocess.ts, `deferSmallPng`) for the worker that runs its
   * batch to decode straight into the batch tensor. Resolves with its prediction, or undefined when
   * the worker's decoder does not take it after all: it is then admitted again, for the caller to
   * prepare with sharp and `submit` (or `cancel`), so the runtime cannot drain under it.
   */
  submitPng(frame: DeferredFrame): Promise<InferredFrame | undefined> {
    return this.enqueue({ png: frame, frame });
  }

  private enqueue(item: Pick<Item, 'data' | 'png' | 'frame'>): Promise<InferredFrame | undefined> {
    this.admitted--;
    return new Promise((resolve, reject) => {
      this.pending.push({ ...item, enqueuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.pending.length > 0 || this.cuts.length > 0) {
      const max = this.info.maxBatchSize;
      // Frames and cut jobs are served oldest first.
      let frameFirst =
        this.pending.length > 0 &&
        (this.cuts.length === 0 || this.pending[0]!.enqueuedAt <= this.cuts[0]!.enqueuedAt);
      if (this.idle.length === 0) {
        const ready = frameFirst ? this.pending.length >= max : this.cuts[0]!.cut !== undefined;
        const behind = ready ? this.workers.find((w) => !w.dead && this.sent.get(w) === 1) : undefined;
        if (!behind) break;
        if (frameFirst) this.dispatch(behind, this.pending.splice(0, max));
        else this.dispatchCut(behind, this.cuts.shift()!);
        continue;
      }
      if (frameFirst) {
        const oldest = this.pending[0]!.enqueuedAt;
        const waited = performance.now() - oldest;
        const delay = this.opts.settings.maxBatchDelayMs;
        const full = this.pending.length >= max;
        if (!full && this.admitted > 0 && waited < delay && max > 1) {
          // The batch may still fill: a cut job goes meanwhile, if one waits.
          if (this.cuts.length > 0) frameFirst = false;
          else {
            this.timer ??= setTimeout(() => {
              this.timer = undefined;
              this.pump();
            }, delay - waited);
            return;
          }
        }
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
      if (frameFirst) this.dispatch(worker, this.pending.splice(0, max));
      else this.dispatchCut(worker, this.cuts.shift()!);
    }
    if (this.role === 'active') this.opts.metrics.queueDepth.set(this.depth);
    this.opts.metrics.runtimeQueueDepth.set({ role: this.role }, this.depth);
  }

  /** Frames a batch of `n` carries: `n`, or the static batch size it is zero-padded to. */
  private batchFor(n: number): number {
    return this.info.dynamicBatch ? n : this.info.maxBatchSize;
  }

  private dispatch(worker: InferenceWorker, items: Item[]): void {
    const pngs = packPngs(items.map((i) => i.png));
    // Every frame a PNG: the worker decodes into a batch tensor it keeps, none is sent.
    const { batch, data } =
      pngs?.frames.length === items.length
        ? { batch: this.batchFor(items.length), data: undefined }
        : assembleBatch(
            this.shape,
            items.map((i) => i.data),
          );
    const geometries = items.map((i) => i.frame.geometry);
    this.runOn(
      worker,
      items.map((i) => i.enqueuedAt),
      () => worker.run({ batch, dims: this.frameDims, data, geometries, pngs }),
      (answers, res) => {
        const pngMs = new Map(pngs?.frames.map((f, k) => [f.index, res.pngMs?.[k]]));
        items.forEach((it, i) => {
          if (!pngMs.has(i)) return it.resolve(answers[i]);
          const ms = pngMs.get(i);
          if (typeof ms === 'number') return it.resolve({ ...answers[i]!, preprocessMs: ms });
          this.admitted++;
          it.resolve(undefined);
        });
      },
      (e) => {
        for (const it of items) it.reject(e);
      },
    );
  }

  private dispatchCut(worker: InferenceWorker, job: QueuedCut): void {
    const n = job.regions.length;
    this.cutRegions -= n;
    const { cut } = job;
    this.runOn(
      worker,
      job.regions.map(() => job.enqueuedAt),
      () =>
        cut
          ? worker.run({ batch: cut.batch, dims: this.frameDims, data: cut.data, geometries: job.geometries })
          : worker.cutRun({
              board: job.board,
              spec: this.manifest.input,
              regions: job.regions,
              batch: this.batchFor(n),
              dims: this.frameDims,
              geometries: job.geometries,
            }),
      (answers, res) =>
        job.resolve(answers.map((a) => ({ ...a, preprocessMs: (cut?.ms ?? res.prepareMs ?? 0) / n }))),
      (e) => {
        // A batch cut here was transferred to the worker and is gone with it.
        if (worker.dead && !cut && !job.retried && !this.closing && this.workers.some((w) => !w.dead)) {
          // Its worker died under it: the job is whole again (the board is shared, nothing was
          // consumed), so it goes back to the head of the queue, once.
          job.retried = true;
          this.cutRegions += n;
          this.cuts.unshift(job);
        } else job.reject(e);
      },
    );
  }

  /**
   * Runs one batch on a worker: counts it, hands each frame its share of the answer (or the
   * error), then returns the worker to the pool, or replaces it if its thread died.
   */
  private runOn(
    worker: InferenceWorker,
    enqueuedAt: number[],
    start: () => Promise<Extract<WorkerReply, { type: 'result' }>>,
    done: (answers: InferredFrame[], res: Extract<WorkerReply, { type: 'result' }>) => void,
    failed: (e: EdgeError) => void,
  ): void {
    const { metrics } = this.opts;
    const frames = enqueuedAt.length;
    this.inFlight++;
    this.sent.set(worker, (this.sent.get(worker) ?? 0) + 1);
    const role = { role: this.role };
    const answering = this.role === 'active';
    if (answering) metrics.batchSize.observe(frames);
    start()
      .then(
        (res) => {
          // Queued is all but the worker's own work: waiting here, behind a batch on the worker's
          // thread, and the messages there and back.
          const began = performance.now() - res.inferenceMs - res.postprocessMs - (res.prepareMs ?? 0);
          if (answering) {
            for (const t of enqueuedAt) metrics.queueDuration.observe(Math.max(0, began - t) / 1000);
            metrics.inferenceDuration.observe(res.inferenceMs / 1000);
            metrics.postprocessDuration.observe(res.postprocessMs / 1000);
          }
          metrics.runtimeInferenceDuration.observe(role, res.inferenceMs / 1000);
          metrics.runtimeFrames.inc(role, frames);
          this.msPerFrame = 0.8 * this.msPerFrame + (0.2 * res.inferenceMs) / frames;
          const answers = enqueuedAt.map((t, i) => ({
            prediction: res.predictions[i]!,
            queueMs: Math.max(0, began - t),
            inferenceMs: res.inferenceMs,
            postprocessMs: res.postprocessMs,
            batchSize: frames,
          }));
          done(answers, res);
        },
        (err: Error) => {
          this.opts.logger.error({ component: 'engine', err, batch: frames }, 'inference failed');
          failed(isEdgeError(err) ? err : new EdgeError(ErrorCodes.INFERENCE_FAILED, err.message));
        },
      )
      .finally(() => {
        this.inFlight--;
        const left = this.sent.get(worker)! - 1;
        if (left > 0) this.sent.set(worker, left);
        else this.sent.delete(worker);
        if (worker.dead) this.replace(worker);
        else if (left === 0) this.idle.push(worker);
        this.pump();
        if (
          this.inFlight === 0 &&
          this.pending.length === 0 &&
          this.admitted === 0 &&
          this.cuts.length === 0
        ) {
          for (const w of this.drainWaiters.splice(0)) w();
        }
      });
  }

  /** A crashed worker is replaced so the pool keeps its size; its batch already failed. */
  private replace(dead: InferenceWorker): void {
    const idx = this.workers.indexOf(dead);
    if (idx < 0 || this.closing) return;
    const { logger } = this.opts;
    const fresh = new InferenceWorker(`${this.role}-inference-${idx}`);
    this.workers[idx] = fresh;
    logger.error({ component: 'engine', worker: idx }, 'inference worker died; starting a replacement');
    fresh
      .load(workerLoadOptions(this.opts, [this.info.executionProvider]))
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
    if (this.inFlight === 0 && this.pending.length === 0 && this.admitted === 0 && this.cutRegions === 0)
      return Promise.resolve();
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
