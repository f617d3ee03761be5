import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { EdgeError, ErrorCodes } from '../errors.js';
import {
  channelsOf,
  manifestFromMetadata,
  parsePartialManifest,
  resolveManifest,
  type ModelManifest,
  type PartialManifest,
} from './manifest.js';
import { readAnomalibMetadata } from './anomalib-metadata.js';
import { familyFromOutputs } from './exporter-families.js';
import { extraInputsKnown, imageInputIndex } from './extra-inputs.js';
import { readHfConfig } from './hf-config.js';
import { readOnnxMetadata } from './onnx-metadata.js';
import { checkOutputs } from './postprocess.js';
import type { ValueInfo } from './worker-protocol.js';

/** What the engine knows about a model file before any session exists. */
export interface ModelFile {
  modelPath: string;
  sha256: string;
  sizeBytes: number;
  metadata: PartialManifest;
  /** The model.json beside the file, when there is one. */
  sidecar: PartialManifest | undefined;
  /**
   * What exporters' files beside it say: a Hugging Face / timm config.json (and
   * preprocessor_config.json), anomalib 1.x's metadata.json (docs/model-families.md).
   */
  hfConfig?: PartialManifest | undefined;
  anomalibMetadata?: PartialManifest | undefined;
}

/** Reads a model file, hashes it and collects the manifest fragments stored with it. */
export async function readModelFile(modelPath: string): Promise<ModelFile> {
  let bytes: Buffer;
  try {
    bytes = await readFile(modelPath);
  } catch (err) {
    throw new EdgeError(
      ErrorCodes.MODEL_LOAD_FAILED,
      `cannot read model file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      {
        modelPath,
      },
    );
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let metadata: PartialManifest = {};
  try {
    metadata = manifestFromMetadata(readOnnxMetadata(bytes).props);
  } catch {
    throw new EdgeError(ErrorCodes.MODEL_LOAD_FAILED, 'the model file is not an ONNX protobuf', {
      modelPath,
    });
  }
  const sidecarPath = path.join(path.dirname(modelPath), 'model.json');
  let sidecar: PartialManifest | undefined;
  let text: string | undefined;
  try {
    text = await readFile(sidecarPath, 'utf8');
  } catch {
    sidecar = undefined;
  }
  if (text !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new EdgeError(ErrorCodes.MANIFEST_INVALID, `${path.basename(sidecarPath)} is not valid JSON`);
    }
    sidecar = parsePartialManifest(json, 'model.json');
  }
  const hfConfig = await readHfConfig(path.dirname(modelPath));
  const anomalibMetadata = await readAnomalibMetadata(path.dirname(modelPath));
  return { modelPath, sha256, sizeBytes: bytes.length, metadata, sidecar, hfConfig, anomalibMetadata };
}

const mismatch = (message: string, context: Record<string, unknown> = {}): EdgeError =>
  new EdgeError(ErrorCodes.MODEL_SHAPE_MISMATCH, message, context);

/** What the graph itself says about its image input (fixed sizes, layout, dtype). */
function manifestFromGraph(input: ValueInfo, hint: PartialManifest): PartialManifest {
  const d = input.dims;
  if (d.length !== 4)
    throw mismatch(
      `input ${input.name} has rank ${d.length}; an image model takes [N, C, H, W] or [N, H, W, C]`,
    );
  const dtype = input.type === 'float32' || input.type === 'uint8' ? input.type : undefined;
  if (!dtype) throw mismatch(`input ${input.name} is ${input.type}; float32 and uint8 are supported`);
  const isCh = (v: number | string | undefined): boolean => v === 1 || v === 3;
  const layout = hint.input?.layout ?? (isCh(d[1]) ? 'nchw' : isCh(d[3]) ? 'nhwc' : 'nchw');
  const [h, w, c] = layout === 'nchw' ? [d[2], d[3], d[1]] : [d[1], d[2], d[3]];
  const out: PartialManifest = { input: { layout, dtype } };
  if (typeof h === 'number' && h > 0) out.input!.height = h;
  if (typeof w === 'number' && w > 0) out.input!.width = w;
  if (c === 1 && hint.input?.color === undefined) out.input!.color = 'gray';
  return out;
}

export interface CheckedModel {
  manifest: ModelManifest;
  /** Static batch size, or undefined when the batch dimension is dynamic. */
  staticBatch: number | undefined;
  /** Per-frame dims without the batch dimension, in the model's layout. */
  frameDims: number[];
}

/**
 * Resolves the manifest from every source (override > model.json > Hugging Face config > ONNX
 * metadata > graph) and
 * checks the graph's declared inputs and outputs against it.
 */
export function checkModel(
  file: ModelFile,
  override: PartialManifest | undefined,
  inputs: ValueInfo[],
  outputs: ValueInfo[],
): CheckedModel {
  if (inputs.length === 0 || !extraInputsKnown(inputs)) {
    throw mismatch(
      `the model has ${inputs.length} inputs (${inputs.map((i) => i.name).join(', ')}); an image model has one, plus orig_target_sizes [N, 2] for lyuwenyu RT-DETR`,
    );
  }
  if (outputs.length === 0) throw mismatch('the model has no outputs');
  const input = inputs[imageInputIndex(inputs)]!;
  const hint: PartialManifest = { ...file.metadata, ...file.hfConfig, ...file.sidecar, ...override };
  const sources = [
    override ?? {},
    file.sidecar ?? {},
    file.hfConfig ?? {},
    file.anomalibMetadata ?? {},
    file.metadata,
    familyFromOutputs(outputs),
    manifestFromGraph(input, hint),
  ];
  const fallbackName = path.basename(file.modelPath, '.onnx').replace(/[^A-Za-z0-9._-]+/g, '-') || 'model';
  const manifest = resolveManifest(sources, fallbackName);
  const { width, height, layout, dtype } = manifest.input;
  const c = channelsOf(manifest.input);
  const expected = layout === 'nchw' ? [c, height, width] : [height, width, c];
  const actual = input.dims.slice(1);
  actual.forEach((dim, i) => {
    if (typeof dim === 'number' && dim > 0 && dim !== expected[i]) {
      throw mismatch(
        `input ${input.name} is [${input.dims.join(', ')}]; the manifest describes [N, ${expected.join(', ')}]`,
        {
          dims: input.dims,
          expected,
        },
      );
    }
  });
  if (input.type !== dtype)
    throw mismatch(`input ${input.name} is ${input.type}; the manifest says ${dtype}`);
  checkOutputs(manifest, outputs);
  const batchDim = input.dims[0];
  const staticBatch = typeof batchDim === 'number' && batchDim > 0 ? batchDim : undefined;
  return { manifest, staticBatch, frameDims: expected };
}
