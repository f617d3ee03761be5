import { decoderFor, type BatchDecoder } from './decoders/index.js';
import type { FrameGeometry } from './geometry.js';
import type { ModelManifest } from './manifest.js';
import type { DeclaredOutput, OutputTensor } from './output-shape.js';
import type { FramePrediction } from './prediction.js';

/**
 * The entry points into output decoding, for the model loader (at load) and the inference worker
 * (per batch). They pick the decoder of the manifest's `output.format` from the registry in
 * decoders/index.ts, which also says how to add a format (README, "Models").
 */

/**
 * Checks, at model load, the outputs the graph declares against the manifest, with the check of
 * the manifest's format. Symbolic dimensions (strings, or negative numbers) pass; an empty shape
 * (onnxruntime's "not defined") passes. Throws MODEL_SHAPE_MISMATCH otherwise:
 * - classification: [N, C], [N, 1, C] or [N, C, 1, 1]; C = labels.length when labels are given.
 * - detection yolov5: [N, boxes, 5 + C]; yolov8: [N, 4 + C, boxes]; C ≥ 1 and C = labels.length
 *   when labels are given.
 * - raw: anything.
 */
export function checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void {
  decoderFor(manifest).checkOutputs(manifest, outputs);
}

/** `checkOutputs` for a model whose first output is `outputName`, declared as `dims`. */
export function checkOutputShape(
  manifest: ModelManifest,
  outputName: string,
  dims: readonly (number | string)[],
): void {
  checkOutputs(manifest, [{ name: outputName, dims }]);
}

/**
 * Post-processing of one configured model in one worker: it holds the format's decoder and its
 * scratch buffers, so a worker creates one per `configure` and reuses it for every batch.
 */
export class Postprocessor {
  private readonly decoder: BatchDecoder;

  constructor(readonly manifest: ModelManifest) {
    this.decoder = decoderFor(manifest).create(manifest);
  }

  /**
   * Post-processes one batch. `outputNames` is the session's output order (classification and
   * detection read the first one; raw returns all of them); `geometries[n]` describes frame n and
   * its length is the batch size. Throws MODEL_SHAPE_MISMATCH when a tensor does not fit the task.
   */
  run(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[] {
    if (geometries.length === 0) return [];
    return this.decoder.decode(outputNames, outputs, geometries);
  }
}

/** One batch with a decoder of its own (tools and tests); the worker keeps a `Postprocessor`. */
export function postprocessBatch(
  manifest: ModelManifest,
  outputNames: readonly string[],
  outputs: Record<string, OutputTensor>,
  geometries: readonly FrameGeometry[],
): FramePrediction[] {
  return new Postprocessor(manifest).run(outputNames, outputs, geometries);
}
