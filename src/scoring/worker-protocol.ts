import type { SerializedError } from '../errors.js';
import type { InputSpec, ModelManifest } from './manifest.js';
import type { BoardRaster, UprightRegion } from './tensor.js';
import type { FrameGeometry } from './geometry.js';
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
  data: ArrayBuffer;
  /** One per real frame; padding frames have none and get no prediction. */
  geometries: FrameGeometry[];
}

/** Sets the manifest used to post-process; sent once the engine has resolved it. */
export interface ConfigureRequest {
  type: 'configure';
  id: number;
  manifest: ModelManifest;
}

/**
 * Cuts upright regions of a board into tensors (scoring/tensor.ts, regionTensor): the board's
 * pixels are shared, not copied; the tensors come back transferred, in the regions' order.
 */
export interface CutRequest {
  type: 'cut';
  id: number;
  board: Omit<BoardRaster, 'data'> & { data: SharedArrayBuffer };
  spec: InputSpec;
  regions: UprightRegion[];
}

export type WorkerRequest =
  LoadRequest | ConfigureRequest | RunRequest | CutRequest | { type: 'close'; id: number };

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
    }
  | { type: 'configured'; id: number }
  | { type: 'cut'; id: number; tensors: ArrayBuffer[] }
  | { type: 'closed'; id: number }
  | { type: 'error'; id: number; error: SerializedError };
