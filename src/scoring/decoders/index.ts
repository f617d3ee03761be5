import { EdgeError, ErrorCodes } from '../../errors.js';
import type { FrameGeometry } from '../geometry.js';
import type { ModelManifest, Task } from '../manifest.js';
import type { DeclaredOutput, OutputTensor } from '../output-shape.js';
import type { FramePrediction } from '../prediction.js';
import { anomalib } from './anomalib.js';
import { classification } from './classification.js';
import { yoloObb } from './obb.js';
import { raw } from './raw.js';
import { rtdetr } from './rtdetr.js';
import { rtdetrLyuwenyu } from './rtdetr-lyuwenyu.js';
import { yoloEnd2end } from './end2end.js';
import { yolov5 } from './yolov5.js';
import { yolov8 } from './yolov8.js';
import { yoloSeg } from './seg.js';

/**
 * The registry of output decoders: one file per output format, one line per file in `decoders`
 * below. Nothing else lists the formats: the manifest schema, the check that a format fits the
 * model's task, the load-time shape check and the worker's decoding all read this list (the
 * manifest only names each task's default format).
 *
 * A decoder declares the manifest `output.format` values it reads and the task it answers for,
 * checks the model's declared outputs when the model loads (a mismatch refuses the model with
 * EDGE_ERR_MODEL_SHAPE_MISMATCH before any frame is scored), and creates the `BatchDecoder` that
 * turns one batch of output tensors into one `FramePrediction` per frame.
 *
 * Adding an output format, say `ssd` for a detection model with its boxes and scores in two
 * outputs:
 *
 * 1. Write `ssd.ts` in this folder:
 *    ```ts
 *    export const ssd: OutputDecoder<'ssd'> = {
 *      formats: ['ssd'],
 *      task: 'detection',
 *      checkOutputs(manifest, outputs) { ... },   // throw shapeError(...) on a mismatch
 *      create: (manifest) => new SsdDecoder(manifest),
 *    };
 *    ```
 *    Shared parts: ../output-shape.ts (the tensor types, `shapeError`, `checkTensor`,
 *    `firstTensor`), ../geometry.ts (model-input pixels back to frame pixels), ./detection.ts
 *    (candidates, class-wise NMS and the detection answer), ../prediction.ts (what to answer).
 * 2. Add `ssd,` to `decoders` below. The manifest then accepts `"output": {"format": "ssd"}` for
 *    detection models, and the `OutputFormat` type includes it.
 * 3. Test it in test/unit/postprocess.test.ts, and add the format to the README's "Models" section.
 *
 * Scratch buffers live on the `BatchDecoder` instance (see yolov8.ts), never at module level: each
 * worker creates one decoder per configured model, so a hot swap drops them with the old model.
 * Files here that are not listed below (detection.ts) are helpers shared by decoders.
 */
export const decoders = [
  classification,
  yolov5,
  yolov8,
  yoloEnd2end,
  rtdetr,
  rtdetrLyuwenyu,
  yoloObb,
  yoloSeg,
  anomalib,
  raw,
] as const;

/** One output format family. `F` is the manifest `output.format` values it decodes. */
export interface OutputDecoder<F extends string = string> {
  /** The manifest `output.format` values it reads. */
  readonly formats: readonly F[];
  /** The manifest task it answers for (a model of task raw is always decoded by `raw`). */
  readonly task: Task;
  /**
   * Checks at load the outputs the model declares (symbolic dimensions are strings or negative
   * numbers; empty dims mean "not defined") against the manifest. Throws MODEL_SHAPE_MISMATCH.
   */
  checkOutputs(manifest: ModelManifest, outputs: readonly DeclaredOutput[]): void;
  /** The decoder of one configured model in one worker; it owns its scratch buffers. */
  create(manifest: ModelManifest): BatchDecoder;
}

export interface BatchDecoder {
  /**
   * Decodes one batch of at least one frame. `outputNames` is the session's output order,
   * `outputs` the tensors by name (batch first, padding frames already removed), `geometries[n]`
   * the map of frame n to the model input. Synchronous: scratch buffers are reused by the next
   * call. Throws MODEL_SHAPE_MISMATCH when a tensor does not fit the format.
   */
  decode(
    outputNames: readonly string[],
    outputs: Record<string, OutputTensor>,
    geometries: readonly FrameGeometry[],
  ): FramePrediction[];
}

/** Every manifest `output.format` value. */
export type OutputFormat = (typeof decoders)[number]['formats'][number];

/** Every `output.format` a manifest may name, in registry order. */
export const outputFormats: readonly OutputFormat[] = decoders.flatMap((d) => d.formats);

/** The formats whose decoders answer for `task`. */
export function formatsOf(task: Task): OutputFormat[] {
  return decoders.filter((d) => d.task === task).flatMap((d) => d.formats);
}

/**
 * The decoder of a manifest's `output.format`. Throws MANIFEST_INVALID when there is none, or
 * when it does not answer for the manifest's task (a resolved manifest always fits).
 */
export function decoderFor(manifest: Pick<ModelManifest, 'task' | 'output'>): OutputDecoder {
  const { task, output } = manifest;
  const decoder = decoders.find((d) => (d.formats as readonly string[]).includes(output.format));
  if (!decoder || decoder.task !== task) {
    throw new EdgeError(
      ErrorCodes.MANIFEST_INVALID,
      `output.format ${output.format} does not fit task ${task}`,
    );
  }
  return decoder;
}
