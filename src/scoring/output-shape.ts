import { EdgeError, ErrorCodes } from '../errors.js';

/**
 * What every output decoder shares about output tensors: their types, the MODEL_SHAPE_MISMATCH
 * error, and the checks of a tensor against the batch it came from. The layout each format
 * expects is checked by its decoder (decoders/), at load and per batch.
 */

export type NumericTypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

export type NumberTypedArray = Exclude<NumericTypedArray, BigInt64Array | BigUint64Array>;

/** A batch output tensor as it comes from onnxruntime: flat typed data + dims, batch first. */
export interface OutputTensor {
  dims: readonly number[];
  data: NumericTypedArray;
}

/**
 * An output as the model declares it, before any run: symbolic dimensions are strings (or
 * negative numbers), and an empty `dims` is onnxruntime's "not defined".
 */
export interface DeclaredOutput {
  name: string;
  dims: readonly (number | string)[];
}

export function shapeError(outputName: string, dims: readonly (number | string)[], why: string): EdgeError {
  return new EdgeError(
    ErrorCodes.MODEL_SHAPE_MISMATCH,
    `output '${outputName}' has dims [${dims.join(', ')}]: ${why}`,
    { output: outputName, dims: [...dims] },
  );
}

/** A concrete dimension, or undefined for a symbolic/unknown one. */
export function concrete(d: number | string | undefined): number | undefined {
  return typeof d === 'number' && Number.isInteger(d) && d >= 0 ? d : undefined;
}

/**
 * The declared output that a single-output format reads (the first), or undefined when there is
 * nothing to check against: no outputs, or a shape the model does not define.
 */
export function firstDeclared(outputs: readonly DeclaredOutput[]): DeclaredOutput | undefined {
  const out = outputs[0];
  return out && out.dims.length > 0 ? out : undefined;
}

/** Validates a runtime tensor: batch dimension equals the frame count and data fills the dims. */
export function checkTensor(
  outputName: string,
  tensor: OutputTensor | undefined,
  frames: number,
): OutputTensor {
  if (!tensor) {
    throw new EdgeError(
      ErrorCodes.MODEL_SHAPE_MISMATCH,
      `output '${outputName}' is missing from the results`,
      {
        output: outputName,
      },
    );
  }
  const { dims } = tensor;
  let size = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) throw shapeError(outputName, dims, 'invalid dimension');
    size *= d;
  }
  if (size !== tensor.data.length) {
    throw shapeError(outputName, dims, `data holds ${tensor.data.length} values, dims imply ${size}`);
  }
  if (dims.length === 0 || dims[0] !== frames) {
    throw shapeError(outputName, dims, `batch dimension must be ${frames} (one per frame)`);
  }
  return tensor;
}

/** The first output of the session (what single-output formats read), checked against the batch. */
export function firstTensor(
  outputNames: readonly string[],
  outputs: Record<string, OutputTensor>,
  frames: number,
): { name: string; tensor: OutputTensor } {
  const name = outputNames[0];
  if (name === undefined) {
    throw new EdgeError(ErrorCodes.MODEL_SHAPE_MISMATCH, 'the model has no outputs');
  }
  return { name, tensor: checkTensor(name, outputs[name], frames) };
}

/** The tensor's values as numbers (64-bit integer outputs are converted). */
export function asNumbers(data: NumericTypedArray): NumberTypedArray {
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    const out = new Float64Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = Number(data[i]!);
    return out;
  }
  return data;
}
