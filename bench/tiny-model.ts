import { GraphBuilder, Rng, type Dim } from '../test/helpers/onnx-graph.js';

/**
 * The bench's small model: a text/component-crop classifier at 192×48 (the size AOI OCR and
 * polarity checks feed), three strided 3×3 convolutions (16, 32, 64 channels) with ReLU, global
 * average pooling and a linear layer with Softmax. About 14 MFLOP a frame: inference costs a
 * fraction of a millisecond, so what a server spends around it (decode, resize, HTTP, messages)
 * decides its throughput. Seeded weights; plain operators that onnxruntime and OpenCV's DNN import.
 */
export const TINY_INPUT = { width: 192, height: 48 } as const;

/** The bench models' pre-processing: RGB stretched to the input, NCHW float, ImageNet normalisation. */
export const IMAGENET_INPUT = {
  resize: 'stretch' as const,
  color: 'rgb' as const,
  layout: 'nchw' as const,
  dtype: 'float32' as const,
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

/** Its manifest: four classes, ImageNet normalisation, stretched to 192×48. */
export const TINY_MANIFEST = {
  name: 'crop-classifier-bench',
  version: '1',
  task: 'classification',
  labels: ['ok', 'smudge', 'missing', 'wrong'],
  defectLabels: ['smudge', 'missing', 'wrong'],
  input: { ...TINY_INPUT, ...IMAGENET_INPUT },
  output: { format: 'probabilities', topK: 3 },
};

export function buildTinyClassifier(o: {
  batch: number | 'dynamic';
  classes?: number;
  seed?: number;
  /** Channels of every convolution times this (default 1; 4 makes it ~13 times the work). */
  widen?: number;
}): Uint8Array {
  const classes = o.classes ?? 4;
  const rng = new Rng(o.seed ?? 7);
  const g = new GraphBuilder();
  const n: Dim = o.batch === 'dynamic' ? 'N' : o.batch;
  let x = g.input('input', 'float32', [n, 3, TINY_INPUT.height, TINY_INPUT.width]);
  let cin = 3;
  for (const cout of [16, 32, 64].map((c) => c * (o.widen ?? 1))) {
    const w = g.init('conv_w', [cout, cin, 3, 3], rng.normals(cout * cin * 9, Math.sqrt(2 / (cin * 9))));
    const b = g.init('conv_b', [cout], rng.normals(cout, 0.01));
    x = g.node('Relu', [
      g.node('Conv', [x, w, b], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
    ]);
    cin = cout;
  }
  const flat = g.node('Flatten', [g.node('GlobalAveragePool', [x])], { axis: 1 });
  const w = g.init('fc_w', [classes, cin], rng.normals(classes * cin, Math.sqrt(1 / cin)));
  const logits = g.node('Gemm', [flat, w, g.init('fc_b', [classes], new Float32Array(classes))], {
    transB: 1,
  });
  g.node('Softmax', [logits], { axis: 1 }, 'output');
  g.output('output', 'float32', [n, classes]);
  return g.build();
}
