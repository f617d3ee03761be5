import type { SerializedError } from '../errors.js';
import type { InputSpec, ModelManifest } from './manifest.js';
import type { BoardRaster, UprightRegion } from './tensor.js';
import type { FrameGeometry } from './geometry.js';
import type { Placement } from './resample.js';
import type { FramePrediction } from './prediction.js';

/** Messages between the engine (main thread) and its inference workers. */
export interface LoadRequest {
  type: 'load';
  id: number;
  modelPath: string;
  providers: string[];
  deviceId: number;
  intraOpThreads: number;
  /** Let onnxruntime's intra-op threads spin-wait between runs (lower latency, busier cores). */
  spinning: boolean;
}

export interface RunRequest {
  type: 'run';
  id: number;
  /** Frames in `data`, padding included (a static batch dimension is always filled). */
  batch: number;
  /** Per-frame dims without the batch dimension. */
  dims: number[];
  /** Frames prepared on the main thread, each at its index; absent when every frame is in `pngs`. */
  data?: ArrayBuffer;
  /** One per real frame; padding frames have none and get no prediction. */
  geometries: FrameGeometry[];
  /** Small PNGs the worker decodes, each into its index of the batch (preprocess.ts, deferSmallPng). */
  pngs?: DeferredPngs;
}

export interface DeferredPngs {
  /** The PNG bodies one after another, in the order of `frames`. */
  bytes: ArrayBuffer;
  frames: { index: number; length: number; placement: Placement }[];
}

/** Sets the manifest used to post-process; sent once the engine has resolved it. */
export interface ConfigureRequest {
  type: 'configure';
  id: number;
  manifest: ModelManifest;
}

/**
 * Cuts upright regions of a board into one batch tensor (scoring/tensor.ts, regionTensor) and runs
 * it as a `run` would: the board's pixels are shared, not copied; the tensors never leave the
 * worker. Answered with a `result` whose `prepareMs` is the time the cuts took.
 */
export interface CutRunRequest {
  type: 'cutRun';
  id: number;
  board: SharedBoard;
  spec: InputSpec;
  regions: UprightRegion[];
  /** Frames in the batch, padding included (a static batch dimension is always filled). */
  batch: number;
  dims: number[];
  /** One per region: its crop ↔ model input. */
  geometries: FrameGeometry[];
}

/** A decoded board in shared memory, read by every worker that cuts its regions. */
export type SharedBoard = Omit<BoardRaster, 'data'> & { data: SharedArrayBuffer };

export type WorkerRequest =
  LoadRequest | ConfigureRequest | RunRequest | CutRunRequest | { type: 'close'; id: number };

export interface ValueInfo {
  name: string;
  type: string;
  dims: (number | string)[];
}

export interface ProviderAttempt {
  provider: string;
  ok: boolean;
  error?: string;
}

export interface LoadedModel {
  provider: string;
  attempts: ProviderAttempt[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

export type WorkerReply =
  | { type: 'loaded'; id: number; model: LoadedModel }
  | {
      type: 'result';
      id: number;
      predictions: FramePrediction[];
      inferenceMs: number;
      postprocessMs: number;
      /** What the worker did before inferring: cutting a `cutRun`'s regions, decoding a `run`'s PNGs. */
      prepareMs?: number;
      /** For a `run` with `pngs`, by position there: each one's decode, or null where it was refused. */
      pngMs?: (number | null)[];
    }
  | { type: 'configured'; id: number }
  | { type: 'closed'; id: number }
  | { type: 'error'; id: number; error: SerializedError };
