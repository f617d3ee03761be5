import type { FrameGeometry } from './geometry.js';
import type { InferredFrame, ModelRuntime } from './model-runtime.js';
import { deferSmallPng, prepareFrame, type FrameInput, type PreprocessLimits } from './preprocess.js';

/**
 * Admits, prepares and infers one frame on `runtime`: the path of every frame the engine scores
 * (and of the bench's in-process limit). A small PNG is decoded by the worker that runs its batch
 * when the runtime prefers that (`decodesPngs`); any other frame, or a PNG the worker's decoder
 * refused, is prepared here. `preprocessMs` includes the worker's decode.
 */
export async function inferFrame(
  runtime: ModelRuntime,
  frame: FrameInput,
  limits: PreprocessLimits,
): Promise<{ prepared: { geometry: FrameGeometry; preprocessMs: number }; result: InferredFrame }> {
  const spec = runtime.manifest.input;
  runtime.admit();
  const deferred = runtime.decodesPngs ? deferSmallPng(frame, spec, limits) : undefined;
  if (deferred) {
    const result = await runtime.submitPng(deferred);
    if (result) {
      const preprocessMs = deferred.preprocessMs + (result.preprocessMs ?? 0);
      return { prepared: { geometry: deferred.geometry, preprocessMs }, result };
    }
    // Refused by the worker's decoder: still admitted, it goes to sharp.
  }
  let prepared;
  try {
    prepared = await prepareFrame(frame, spec, limits);
  } catch (err) {
    runtime.cancel();
    throw err;
  }
  return { prepared, result: await runtime.submit(prepared) };
}
