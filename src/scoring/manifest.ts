import { Ajv, type ErrorObject } from 'ajv';
import { EdgeError, ErrorCodes } from '../errors.js';
import { formatsOf, outputFormats, type OutputFormat } from './decoders/index.js';
import { ultralyticsDetection } from './exporter-families.js';
import { referenceProblem, referenceSchema, type ReferenceProfile } from './reference.js';

/**
 * The model manifest (README, "Models"): everything needed to pre- and post-process travels with
 * the model. Values from the ONNX `metadata_props` fill what the manifest leaves out. The output
 * formats, and the task each one serves, come from the decoder registry (decoders/index.ts).
 */
export type Task = 'classification' | 'detection' | 'anomaly' | 'raw';
export type ResizeMode = 'stretch' | 'letterbox' | 'center-crop';
export type ColorOrder = 'rgb' | 'bgr' | 'gray';
export type Layout = 'nchw' | 'nhwc';
export type InputDType = 'float32' | 'uint8';
export type { OutputFormat };

export interface InputSpec {
  width: number;
  height: number;
  resize: ResizeMode;
  color: ColorOrder;
  layout: Layout;
  dtype: InputDType;
  /** Pixel p (0..255) becomes (p * scale - mean[c]) / std[c]. */
  scale: number;
  mean: number[];
  std: number[];
  /** Fill value (0..255) for letterbox padding; YOLO exports expect 114. */
  padValue: number;
}

export interface OutputSpec {
  format: OutputFormat;
  topK: number;
  scoreThreshold: number;
  iouThreshold: number;
  /** Upper bound on detections returned per frame, after NMS. */
  maxDetections: number;
  /**
   * Task anomaly: the normalised score (0..1) above which a frame, and a map pixel, is anomalous.
   * Default 0.5, the threshold anomalib trained (docs/model-families.md, "Anomaly detection").
   */
  anomalyThreshold?: number;
  /** Task anomaly, anomalib 1.x: the raw thresholds and min/max of its metadata.json. */
  anomalyNormalization?: AnomalyNormalization;
}

/** anomalib 1.x min-max normalisation: clamp((x − threshold) / (max − min) + 0.5, 0, 1). */
export interface AnomalyNormalization {
  imageThreshold: number;
  pixelThreshold: number;
  min: number;
  max: number;
}

export interface ModelManifest {
  name: string;
  version: string;
  task: Task;
  labels: string[];
  defectLabels: string[];
  input: InputSpec;
  output: OutputSpec;
  /** What the frames it was validated on looked like, for drift (docs/drift.md). */
  reference?: ReferenceProfile;
}

/** A manifest as written by a person: everything optional except what the graph cannot tell. */
export type PartialManifest = Partial<Omit<ModelManifest, 'input' | 'output'>> & {
  input?: Partial<InputSpec>;
  output?: Partial<OutputSpec>;
};

const inputSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    width: { type: 'integer', minimum: 1, maximum: 8192 },
    height: { type: 'integer', minimum: 1, maximum: 8192 },
    resize: { enum: ['stretch', 'letterbox', 'center-crop'] },
    color: { enum: ['rgb', 'bgr', 'gray'] },
    layout: { enum: ['nchw', 'nhwc'] },
    dtype: { enum: ['float32', 'uint8'] },
    scale: { type: 'number' },
    mean: { type: 'array', items: { type: 'number' }, minItems: 1, maxItems: 3 },
    std: {
      type: 'array',
      items: { type: 'number', not: { const: 0 } },
      minItems: 1,
      maxItems: 3,
    },
    padValue: { type: 'integer', minimum: 0, maximum: 255 },
  },
} as const;

const outputSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    format: { enum: outputFormats },
    topK: { type: 'integer', minimum: 1, maximum: 1000 },
    scoreThreshold: { type: 'number', minimum: 0, maximum: 1 },
    iouThreshold: { type: 'number', minimum: 0, maximum: 1 },
    maxDetections: { type: 'integer', minimum: 1, maximum: 10000 },
    anomalyThreshold: { type: 'number', minimum: 0, maximum: 1 },
    anomalyNormalization: {
      type: 'object',
      additionalProperties: false,
      required: ['imageThreshold', 'pixelThreshold', 'min', 'max'],
      properties: {
        imageThreshold: { type: 'number' },
        pixelThreshold: { type: 'number' },
        min: { type: 'number' },
        max: { type: 'number' },
      },
    },
  },
} as const;

const labelList = {
  type: 'array',
  maxItems: 10000,
  items: { type: 'string', minLength: 1, maxLength: 128 },
} as const;

/** JSON schema of a (partial) manifest; reused by the twin's `model` block. */
export const manifestSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
    version: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]*$' },
    task: { enum: ['classification', 'detection', 'anomaly', 'raw'] },
    labels: labelList,
    defectLabels: labelList,
    input: inputSchema,
    output: outputSchema,
    reference: referenceSchema,
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validatePartial = ajv.compile<PartialManifest>({ ...manifestSchema, additionalProperties: true });

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`).join('; ');
}

/** Validates a manifest fragment (model.json or the twin's model block) without defaults. */
export function parsePartialManifest(value: unknown, source: string): PartialManifest {
  if (!validatePartial(value)) {
    throw new EdgeError(
      ErrorCodes.MANIFEST_INVALID,
      `manifest from ${source} is invalid: ${describe(validatePartial.errors)}`,
      {
        source,
      },
    );
  }
  return value;
}

/**
 * Reads the ONNX `metadata_props` that exporters (Ultralytics in particular) write and turns them
 * into a manifest fragment. Ultralytics writes Python literals: `names` is `{0: 'a', 1: 'b'}` and
 * `imgsz` is `[640, 640]`.
 */
export function manifestFromMetadata(props: Record<string, string>): PartialManifest {
  const out: PartialManifest = {};
  const task = props.task;
  if (task === 'detect' || task === 'detection' || task === 'obb' || task === 'segment')
    out.task = 'detection';
  else if (task === 'classify' || task === 'classification') out.task = 'classification';
  const names = props.names;
  if (names) {
    const labels = parseNames(names);
    if (labels.length > 0) out.labels = labels;
  }
  const imgsz = props.imgsz;
  if (imgsz) {
    const nums = imgsz.match(/\d+/g)?.map(Number) ?? [];
    if (nums.length >= 1) {
      const h = nums[0]!;
      const w = nums[1] ?? h;
      out.input = { height: h, width: w };
    }
  }
  if (props.name) out.name = sanitizeName(props.name);
  if (props.version) out.version = props.version;
  if (props.author?.toLowerCase().includes('ultralytics') || props.stride) {
    out.input = { resize: 'letterbox', color: 'rgb', layout: 'nchw', scale: 1 / 255, ...out.input };
    if (out.task === 'detection') {
      const family = ultralyticsDetection(props);
      out.input = { ...out.input, ...family.input };
      out.output = family.output;
    }
  }
  return out;
}

function sanitizeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'model';
}

function parseNames(text: string): string[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    try {
      const arr: unknown = JSON.parse(trimmed.replace(/'/g, '"'));
      if (Array.isArray(arr)) return arr.map(String);
    } catch {
      // fall through to the dict parser
    }
  }
  const entries: [number, string][] = [];
  const re = /(\d+)\s*:\s*(['"])(.*?)\2/g;
  for (let m = re.exec(trimmed); m; m = re.exec(trimmed)) entries.push([Number(m[1]), m[3]!]);
  entries.sort((a, b) => a[0] - b[0]);
  return entries.map(([, v]) => v);
}

/**
 * Merges manifest sources (highest precedence first) and fills defaults. The result is complete
 * and validated; throws MANIFEST_INVALID when something essential is missing or inconsistent.
 */
export function resolveManifest(sources: PartialManifest[], fallbackName: string): ModelManifest {
  const pick = <K extends keyof PartialManifest>(key: K): PartialManifest[K] => {
    for (const s of sources) if (s[key] !== undefined) return s[key];
    return undefined;
  };
  const pickIn = <K extends keyof InputSpec>(key: K): InputSpec[K] | undefined => {
    for (const s of sources) if (s.input?.[key] !== undefined) return s.input[key];
    return undefined;
  };
  const pickOut = <K extends keyof OutputSpec>(key: K): OutputSpec[K] | undefined => {
    for (const s of sources) if (s.output?.[key] !== undefined) return s.output[key];
    return undefined;
  };

  const task = pick('task') ?? 'classification';
  const labels = pick('labels') ?? [];
  const color = pickIn('color') ?? 'rgb';
  const channels = color === 'gray' ? 1 : 3;
  const width = pickIn('width');
  const height = pickIn('height');
  if (width === undefined || height === undefined) {
    throw new EdgeError(
      ErrorCodes.MANIFEST_INVALID,
      'manifest names no input width/height and the model does not fix them',
    );
  }
  const mean = pickIn('mean') ?? [0];
  const std = pickIn('std') ?? [1];
  for (const [k, v] of [
    ['mean', mean],
    ['std', std],
  ] as const) {
    if (v.length !== 1 && v.length !== channels) {
      throw new EdgeError(
        ErrorCodes.MANIFEST_INVALID,
        `input.${k} has ${v.length} values; ${color} needs 1 or ${channels}`,
      );
    }
  }
  const defaultFormat: OutputFormat = DEFAULT_FORMAT[task];
  const format = pickOut('format') ?? defaultFormat;
  // A raw model may name any format: its outputs are answered as they are.
  const allowed = task === 'raw' ? outputFormats : formatsOf(task);
  if (!allowed.includes(format)) {
    throw new EdgeError(ErrorCodes.MANIFEST_INVALID, `output.format ${format} does not fit task ${task}`);
  }
  const defectLabels = pick('defectLabels') ?? [];
  const unknown = labels.length > 0 ? defectLabels.filter((l) => !labels.includes(l)) : [];
  if (unknown.length > 0) {
    throw new EdgeError(ErrorCodes.MANIFEST_INVALID, `defectLabels not among labels: ${unknown.join(', ')}`);
  }
  const manifest: ModelManifest = {
    name: pick('name') ?? fallbackName,
    version: pick('version') ?? '0',
    task,
    labels,
    defectLabels,
    input: {
      width,
      height,
      resize: pickIn('resize') ?? (task === 'detection' ? 'letterbox' : 'stretch'),
      color,
      layout: pickIn('layout') ?? 'nchw',
      dtype: pickIn('dtype') ?? 'float32',
      scale: pickIn('scale') ?? 1 / 255,
      mean,
      std,
      padValue: pickIn('padValue') ?? 114,
    },
    output: {
      format: task === 'raw' ? 'raw' : format,
      topK: pickOut('topK') ?? 5,
      scoreThreshold: pickOut('scoreThreshold') ?? 0.25,
      iouThreshold: pickOut('iouThreshold') ?? 0.45,
      maxDetections: pickOut('maxDetections') ?? 300,
    },
  };
  const anomalyThreshold = pickOut('anomalyThreshold');
  if (anomalyThreshold !== undefined) manifest.output.anomalyThreshold = anomalyThreshold;
  const anomalyNormalization = pickOut('anomalyNormalization');
  if (anomalyNormalization !== undefined) manifest.output.anomalyNormalization = anomalyNormalization;
  const reference = pick('reference');
  if (reference !== undefined) {
    const problem = referenceProblem(reference);
    if (problem) throw new EdgeError(ErrorCodes.MANIFEST_INVALID, problem);
    manifest.reference = reference;
  }
  return parsePartialManifest(manifest, 'resolved manifest') as ModelManifest;
}

const DEFAULT_FORMAT: Record<Task, OutputFormat> = {
  classification: 'probabilities',
  detection: 'yolov8',
  anomaly: 'anomalib',
  raw: 'raw',
};

export function channelsOf(input: Pick<InputSpec, 'color'>): 1 | 3 {
  return input.color === 'gray' ? 1 : 3;
}
