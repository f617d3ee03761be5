import type { FrameGeometry } from './geometry.js';
import type { InferenceWorker } from './inference-worker.js';
import type { InputSpec } from './manifest.js';
import type { DeferredFrame, PreparedFrame } from './preprocess.js';
import type { FramePrediction } from './prediction.js';
import { blankFrame, type InputTensorData, type UprightRegion } from './tensor.js';
import type { DeferredPngs, SharedBoard } from './worker-protocol.js';

/**
 * What waits for a runtime's inference workers and the batches it sends them
 * (scoring/model-runtime.ts).
 */

/** One frame's share of an inference batch. */
export interface InferredFrame {
  prediction: FramePrediction;
  queueMs: number;
  inferenceMs: number;
  postprocessMs: number;
  batchSize: number;
  /** A deferred PNG's decode on the worker (`submitPng`). */
  preprocessMs?: number;
}

/** A frame waiting for a worker: its tensor, or (`submitPng`) a small PNG the worker decodes. */
export interface Item {
  data?: InputTensorData;
  png?: DeferredFrame;
  frame: PreparedFrame | DeferredFrame;
  enqueuedAt: number;
  /** Undefined for a deferred PNG the worker's decoder refused. */
  resolve: (r: InferredFrame | undefined) => void;
  reject: (e: Error) => void;
}

/**
 * Upright regions of a shared board, queued to be cut and inferred as one batch by whichever worker
 * is free next (`submitCut`); the event loop may cut it itself instead (`claim`).
 */
export interface CutJob {
  readonly board: SharedBoard;
  readonly regions: UprightRegion[];
  readonly geometries: FrameGeometry[];
  readonly enqueuedAt: number;
  /** Each region's answer, in order, with its share of the cut (`preprocessMs`). */
  readonly result: Promise<(InferredFrame & { preprocessMs: number })[]>;
}

export interface QueuedCut extends CutJob {
  resolve: (r: (InferredFrame & { preprocessMs: number })[]) => void;
  reject: (e: Error) => void;
  /** Set once the job went back to the queue because its worker died under it. */
  retried: boolean;
  /** The batch tensor, once the event loop cut the job itself (`cutHere`), and what that took. */
  cut?: { batch: number; data: ArrayBuffer; ms: number };
}

/** How a runtime's batches are shaped. */
export interface BatchShape {
  spec: InputSpec;
  /** Per-frame dims, without the batch dimension. */
  dims: number[];
  /** Frames a batch of `n` carries: `n`, or the static batch size it is zero-padded to. */
  batchFor: (n: number) => number;
}

/**
 * Copies frames into one batch tensor, zero-padded to a static batch size; a frame without a
 * tensor (a PNG the worker decodes into its place) leaves zeros.
 */
export function assembleBatch(
  shape: BatchShape,
  frames: (InputTensorData | undefined)[],
): { batch: number; data: ArrayBuffer } {
  const batch = shape.batchFor(frames.length);
  const frameSize = shape.dims.reduce((a, b) => a * b, 1);
  const size = batch * frameSize;
  const out = shape.spec.dtype === 'float32' ? new Float32Array(size) : new Uint8Array(size);
  frames.forEach((f, i) => f && out.set(f, i * frameSize));
  return { batch, data: out.buffer };
}

/** The deferred PNGs of a batch, their bodies in one buffer (transferred to the worker, not cloned). */
export function packPngs(pngs: (DeferredFrame | undefined)[]): DeferredPngs | undefined {
  const frames: DeferredPngs['frames'] = [];
  let length = 0;
  pngs.forEach((p, index) => {
    if (!p) return;
    frames.push({ index, length: p.png.length, placement: p.placement });
    length += p.png.length;
  });
  if (frames.length === 0) return undefined;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const p of pngs) {
    if (!p) continue;
    bytes.set(p.png, at);
    at += p.png.length;
  }
  return { bytes: bytes.buffer, frames };
}

/**
 * Runs blank frames through every worker, `runs` times at batch 1 and at the largest batch;
 * answers the last batch's inference time per frame. Throws what a run threw, or on a score that
 * is not a finite number.
 */
export async function warmUpWorkers(
  workers: InferenceWorker[],
  shape: BatchShape,
  maxBatchSize: number,
  runs: number,
): Promise<number> {
  const { spec } = shape;
  const geometry = {
    frameWidth: spec.width,
    frameHeight: spec.height,
    scaleX: 1,
    scaleY: 1,
    offsetX: 0,
    offsetY: 0,
  };
  let msPerFrame = 10;
  for (const w of workers) {
    for (let r = 0; r < runs; r++) {
      for (const n of new Set([1, maxBatchSize])) {
        const frames = Array.from({ length: n }, () => blankFrame(spec));
        const { batch, data } = assembleBatch(shape, frames);
        const geometries = frames.map(() => geometry);
        const res = await w.run({ batch, dims: shape.dims, data, geometries });
        checkWarmupOutput(res.predictions);
        msPerFrame = res.inferenceMs / batch;
      }
    }
  }
  return msPerFrame;
}

/** Throws if a warm-up batch scored anything that is not a finite number. */
export function checkWarmupOutput(predictions: FramePrediction[]): void {
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
