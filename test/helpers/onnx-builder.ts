import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GraphBuilder, Rng, f, type Dim } from './onnx-graph.js';

/**
 * The model zoo of the tests: small, real ONNX models built in memory (opset 13, IR 7). Every
 * model reads `input` and writes `output`; a dynamic batch is the symbolic dim 'N'.
 */

export type Batch = 'dynamic' | number;
const batchDim = (batch: Batch): Dim => (batch === 'dynamic' ? 'N' : batch);

export interface ClassifierOptions {
  batch: Batch;
  channels: 1 | 3;
  height: number;
  width: number;
  classes: number;
  layout?: 'nchw' | 'nhwc';
  /** 'probabilities' (default) ends in Softmax; 'logits' leaves it out. */
  output?: 'probabilities' | 'logits';
  /** 'uint8' inputs are cast to float inside the graph; the arithmetic is the same. */
  dtype?: 'float32' | 'uint8';
  metadata?: Record<string, string>;
  /** W, [channels][classes]. Default: see {@link defaultClassifierWeights}. */
  weights?: number[][];
  /** b, [classes]. Default: zeros with custom `weights`, the default bias otherwise. */
  bias?: number[];
}

/** Steepness of the default classifier: 20 makes the nearest class win with p ≈ 0.9 or more. */
const SHARPNESS = 20;

/**
 * Default classifier parameters. Class k has the centre c_k = k / (classes - 1) (0.5 for one
 * class); with W[c][k] = 2·S·c_k / channels and b[k] = -S·c_k² (S = 20) the logits are
 * -S·(m - c_k)² + S·m², where m is the mean of the per-channel means. The S·m² term is shared by
 * all classes, so the class whose centre is nearest the frame's mean input value wins: with the
 * usual scale 1/255, a black frame is class 0 and a white frame the last class.
 */
export function defaultClassifierWeights(
  channels: number,
  classes: number,
): { weights: number[][]; bias: number[] } {
  const centre = (k: number): number => (classes === 1 ? 0.5 : k / (classes - 1));
  const row = Array.from({ length: classes }, (_, k) => (2 * SHARPNESS * centre(k)) / channels);
  return {
    weights: Array.from({ length: channels }, () => [...row]),
    bias: Array.from({ length: classes }, (_, k) => -SHARPNESS * centre(k) ** 2),
  };
}

function classifierParams(o: Pick<ClassifierOptions, 'channels' | 'classes' | 'weights' | 'bias'>): {
  weights: number[][];
  bias: number[];
} {
  const defaults = defaultClassifierWeights(o.channels, o.classes);
  const weights = o.weights ?? defaults.weights;
  const bias = o.bias ?? (o.weights ? new Array<number>(o.classes).fill(0) : defaults.bias);
  if (
    weights.length !== o.channels ||
    weights.some((r) => r.length !== o.classes) ||
    bias.length !== o.classes
  ) {
    throw new Error(`classifier weights must be [${o.channels}][${o.classes}] and bias [${o.classes}]`);
  }
  return { weights, bias };
}

/**
 * A classifier whose answer can be worked out by hand: logits = (per-channel mean of the input
 * tensor) · W + b, then Softmax when `output` is 'probabilities'. Shape [N, C, H, W] (or NHWC) in,
 * [N, classes] out.
 */
export function buildClassifier(o: ClassifierOptions): Uint8Array {
  const { weights, bias } = classifierParams(o);
  const nhwc = o.layout === 'nhwc';
  const g = new GraphBuilder();
  const dims = nhwc
    ? [batchDim(o.batch), o.height, o.width, o.channels]
    : [batchDim(o.batch), o.channels, o.height, o.width];
  let x = g.input('input', o.dtype ?? 'float32', dims);
  if (o.dtype === 'uint8') x = g.node('Cast', [x], { to: 1 });
  const means = g.node('ReduceMean', [x], { axes: nhwc ? [1, 2] : [2, 3], keepdims: 0 });
  const w = g.init('W', [o.channels, o.classes], weights.flat());
  const b = g.init('b', [o.classes], bias);
  const probabilities = (o.output ?? 'probabilities') === 'probabilities';
  const logits = g.node('Gemm', [means, w, b], {}, probabilities ? undefined : 'output');
  if (probabilities) g.node('Softmax', [logits], { axis: 1 }, 'output');
  g.output('output', 'float32', [batchDim(o.batch), o.classes]);
  return g.build({ metadata: o.metadata });
}

/**
 * What {@link buildClassifier} computes, in plain JS, for one item. `input` is that item's tensor
 * (already preprocessed: the values the model sees) in the given layout.
 */
export function expectedClassifierOutput(
  input: ArrayLike<number>,
  o: Pick<
    ClassifierOptions,
    'channels' | 'height' | 'width' | 'classes' | 'layout' | 'output' | 'weights' | 'bias'
  >,
): number[] {
  const { weights, bias } = classifierParams(o);
  const plane = o.height * o.width;
  const sums = new Array<number>(o.channels).fill(0);
  for (let i = 0; i < plane * o.channels; i++) {
    const c = o.layout === 'nhwc' ? i % o.channels : Math.floor(i / plane);
    sums[c]! += input[i]!;
  }
  const means = sums.map((s) => s / plane);
  const logits = bias.map((b, k) => means.reduce((acc, m, c) => acc + m * weights[c]![k]!, b));
  if (o.output === 'logits') return logits;
  const max = Math.max(...logits);
  const exps = logits.map((l) => Math.exp(l - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

/** Output equals input: lets tests read back exactly what preprocessing fed the model. */
export function buildIdentityModel(o: {
  batch: Batch;
  dims: number[];
  dtype?: 'float32' | 'uint8';
}): Uint8Array {
  const g = new GraphBuilder();
  const dims = [batchDim(o.batch), ...o.dims];
  g.node('Identity', [g.input('input', o.dtype ?? 'float32', dims)], {}, 'output');
  g.output('output', o.dtype ?? 'float32', dims);
  return g.build();
}

export interface Box {
  cx: number;
  cy: number;
  w: number;
  h: number;
}
export interface DetectorOptions<P> {
  batch: Batch;
  height: number;
  width: number;
  classes: number;
  /** Constant predictions, in model-input pixels. */
  predictions: P[];
  metadata?: Record<string, string>;
}

/**
 * Emits the constant `rows` ([1, a, b]) once per batch item. Adding 0 × mean(input), shaped
 * [N, 1, 1], both ties the output to the input's values (nothing is constant-folded away) and
 * broadcasts it to the input's batch size.
 */
function constantDetector(o: DetectorOptions<unknown>, a: number, b: number, rows: number[]): Uint8Array {
  const g = new GraphBuilder();
  const n = batchDim(o.batch);
  const x = g.input('input', 'float32', [n, 3, o.height, o.width]);
  const mean = g.node('ReduceMean', [x], { axes: [1, 2, 3], keepdims: 1 });
  const zero = g.node('Mul', [g.node('Reshape', [mean, g.ints('shape', [-1, 1, 1])]), g.scalar('zero', 0)]);
  g.node('Add', [g.init('predictions', [1, a, b], rows), zero], {}, 'output');
  g.output('output', 'float32', [n, a, b]);
  return g.build({ metadata: o.metadata });
}

function checkScores(scores: number[], classes: number): void {
  if (scores.length !== classes)
    throw new Error(`a prediction has ${scores.length} scores for ${classes} classes`);
}

/** Ultralytics YOLOv8 layout: [N, 4 + C, boxes], rows cx, cy, w, h, then one score per class. */
export function buildYoloV8Detector(o: DetectorOptions<Box & { scores: number[] }>): Uint8Array {
  const a = 4 + o.classes;
  const b = o.predictions.length;
  const rows = new Array<number>(a * b).fill(0);
  o.predictions.forEach((p, j) => {
    checkScores(p.scores, o.classes);
    [p.cx, p.cy, p.w, p.h, ...p.scores].forEach((v, i) => (rows[i * b + j] = v));
  });
  return constantDetector(o, a, b, rows);
}

/** YOLOv5 layout: [N, boxes, 5 + C], columns cx, cy, w, h, objectness, then one score per class. */
export function buildYoloV5Detector(o: DetectorOptions<Box & { obj: number; scores: number[] }>): Uint8Array {
  const rows = o.predictions.flatMap((p) => {
    checkScores(p.scores, o.classes);
    return [p.cx, p.cy, p.w, p.h, p.obj, ...p.scores];
  });
  return constantDetector(o, o.predictions.length, 5 + o.classes, rows);
}

/** 3×3 convolution (+ bias) with He-scaled weights. */
function conv(
  g: GraphBuilder,
  rng: Rng,
  x: string,
  cin: number,
  cout: number,
  k: number,
  stride = 1,
  bias = true,
): string {
  const w = g.init(
    'conv_w',
    [cout, cin, k, k],
    rng.normals(cout * cin * k * k, Math.sqrt(2 / (cin * k * k))),
  );
  const inputs = bias ? [x, w, g.init('conv_b', [cout], rng.normals(cout, 0.01))] : [x, w];
  const p = (k - 1) >> 1;
  return g.node('Conv', inputs, { kernel_shape: [k, k], strides: [stride, stride], pads: [p, p, p, p] });
}

/** Pools [N, C, H, W] to [N, classes] probabilities. */
function head(g: GraphBuilder, rng: Rng, x: string, channels: number, classes: number): void {
  const flat = g.node('Flatten', [g.node('GlobalAveragePool', [x])], { axis: 1 });
  const w = g.init('fc_w', [classes, channels], rng.normals(classes * channels, Math.sqrt(1 / channels)));
  const logits = g.node('Gemm', [flat, w, g.init('fc_b', [classes], new Float32Array(classes))], {
    transB: 1,
  });
  g.node('Softmax', [logits], { axis: 1 }, 'output');
}

/**
 * A deliberately slow 3-channel classifier ([N, 3, size, size] → [N, 2] probabilities): a stem
 * conv and `depth` 3×3 convolutions of `channels` channels at full resolution (no downsampling).
 * With the defaults (size 128, depth 16, 64 channels, ≈19 GFLOP) one inference took 215–230 ms
 * on one core of the 2-core AMD EPYC dev machine (intraOpNumThreads 1) and about 120 ms with
 * onnxruntime's default two threads on an idle machine. Cost scales with size² × depth × channels².
 */
export function buildSlowModel(o: {
  batch: Batch;
  size?: number;
  depth?: number;
  channels?: number;
}): Uint8Array {
  const size = o.size ?? 128;
  const ch = o.channels ?? 64;
  const rng = new Rng(7);
  const g = new GraphBuilder();
  let x = g.input('input', 'float32', [batchDim(o.batch), 3, size, size]);
  x = g.node('Relu', [conv(g, rng, x, 3, ch, 3)]);
  for (let i = 0; i < (o.depth ?? 16); i++) x = g.node('Relu', [conv(g, rng, x, ch, ch, 3)]);
  head(g, rng, x, ch, 2);
  g.output('output', 'float32', [batchDim(o.batch), 2]);
  return g.build();
}

function batchNorm(g: GraphBuilder, rng: Rng, x: string, ch: number, gamma = 1): string {
  const scale = g.init('bn_scale', [ch], rng.uniforms(ch, 0.8 * gamma, 1.2 * gamma));
  const shift = g.init('bn_bias', [ch], rng.normals(ch, 0.05));
  const mean = g.init('bn_mean', [ch], rng.normals(ch, 0.05));
  const variance = g.init('bn_var', [ch], rng.uniforms(ch, 0.8, 1.2));
  return g.node('BatchNormalization', [x, scale, shift, mean, variance], { epsilon: f(1e-5) });
}

/**
 * A ResNet-18-style classifier with realistic cost: stem conv 7×7/2 + BN + ReLU + maxpool 3×3/2,
 * four stages of two basic blocks (3×3 conv + BN, identity or 1×1/2 projection shortcuts) with
 * `width`, 2·width, 4·width, 8·width channels, GlobalAveragePool, Gemm, Softmax. Weights are
 * seeded He-normal; the residual branch's last BN is scaled by 0.5 so activations stay bounded.
 * Uses only operators that OpenCV 4.6's DNN module imports; build it with batch 1 for OpenCV.
 * Default width 64 is ResNet-18's topology (≈1.8 GFLOP at 224², 11 M parameters, 45 MB): about
 * 43–49 ms per frame at batch 1, and the same per frame at batch 8, on one core of the 2-core dev
 * machine (intraOpNumThreads 1). OpenCV 4.6 (Debian's python3-opencv) gives the same outputs.
 */
export function buildResNetLike(o: {
  batch: Batch;
  size?: number;
  classes?: number;
  seed?: number;
  width?: number;
  blocks?: number;
}): Uint8Array {
  const size = o.size ?? 224;
  const width = o.width ?? 64;
  const classes = o.classes ?? 4;
  const rng = new Rng(o.seed ?? 1);
  const g = new GraphBuilder();
  let x = g.input('input', 'float32', [batchDim(o.batch), 3, size, size]);
  x = g.node('Relu', [batchNorm(g, rng, conv(g, rng, x, 3, width, 7, 2, false), width)]);
  x = g.node('MaxPool', [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  let ch = width;
  for (let stage = 0; stage < 4; stage++) {
    const out = width << stage;
    for (let block = 0; block < (o.blocks ?? 2); block++) {
      const stride = stage > 0 && block === 0 ? 2 : 1;
      let y = g.node('Relu', [batchNorm(g, rng, conv(g, rng, x, ch, out, 3, stride, false), out)]);
      y = batchNorm(g, rng, conv(g, rng, y, out, out, 3, 1, false), out, 0.5);
      const shortcut =
        stride === 1 && ch === out ? x : batchNorm(g, rng, conv(g, rng, x, ch, out, 1, stride, false), out);
      x = g.node('Relu', [g.node('Add', [y, shortcut])]);
      ch = out;
    }
  }
  head(g, rng, x, ch, classes);
  g.output('output', 'float32', [batchDim(o.batch), classes]);
  return g.build();
}

/**
 * A model that fits no image task. 'input-rank' (default): a classifier whose input is rank 3
 * ([N, 32, 32]); 'output-rank': an image input [N, 3, 32, 32] whose output is rank 4
 * ([N, 3, 1, 1]), which is neither a classifier nor a YOLO head.
 */
export function buildWrongShapeModel(o: { kind?: 'input-rank' | 'output-rank' } = {}): Uint8Array {
  const g = new GraphBuilder();
  if (o.kind === 'output-rank') {
    g.node('GlobalAveragePool', [g.input('input', 'float32', ['N', 3, 32, 32])], {}, 'output');
    g.output('output', 'float32', ['N', 3, 1, 1]);
  } else {
    const means = g.node('ReduceMean', [g.input('input', 'float32', ['N', 32, 32])], {
      axes: [2],
      keepdims: 0,
    });
    const w = g.init('W', [32, 2], new Float32Array(64).fill(0.01));
    g.node('Softmax', [g.node('Gemm', [means, w, g.init('b', [2], [0, 0])])], { axis: 1 }, 'output');
    g.output('output', 'float32', ['N', 2]);
  }
  return g.build();
}

/**
 * Bytes that onnxruntime refuses: the first half of a valid model (a protobuf cut mid-field)
 * with a few garbled bytes. Deterministic.
 */
export function corruptModel(valid: Uint8Array): Uint8Array {
  const out = Uint8Array.from(valid.subarray(0, Math.max(8, Math.floor(valid.length / 2))));
  for (let i = 0; i < out.length; i += 97) out[i] = 0xff;
  return out;
}

/** Writes `model.onnx` (and `model.json` when a manifest is given) into `dir`, creating it. */
export async function writeModelDir(
  dir: string,
  model: Uint8Array,
  manifest?: object,
): Promise<{ modelPath: string }> {
  await mkdir(dir, { recursive: true });
  const modelPath = join(dir, 'model.onnx');
  await writeFile(modelPath, model);
  if (manifest !== undefined)
    await writeFile(join(dir, 'model.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return { modelPath };
}
