import { GraphBuilder, type Dim, type ElemType } from './onnx-graph.js';

/**
 * Test models of the exporter families (docs/model-families.md): each emits constant tensors with
 * the exporter's exact output names, shapes, coordinate conventions and metadata keys, so a
 * test can work out the answer by hand. Every output is tied to the input (0 × mean(input) is
 * added, which also broadcasts it to the batch size) so nothing is constant-folded away.
 */

export interface ConstantOutput {
  name: string;
  /** Dims of one batch item, without the batch dimension. */
  dims: number[];
  values: ArrayLike<number>;
  /** 'bool' outputs are the constant compared with 0.5 inside the graph. Default float32. */
  elem?: 'float32' | 'bool';
}

export interface ConstantModelOptions {
  inputName?: string;
  /** [channels, height, width] of the image input. */
  input: [number, number, number];
  /** 'N' (dynamic, the default) or a fixed batch size. */
  batch?: Dim;
  outputs: ConstantOutput[];
  metadata?: Record<string, string>;
  /** More graph inputs (lyuwenyu RT-DETR's orig_target_sizes), unused by the outputs. */
  extraInputs?: { name: string; elem: ElemType; dims: Dim[] }[];
}

/** A model whose outputs are the given constants, once per batch item. */
export function buildConstantModel(o: ConstantModelOptions): Uint8Array {
  const g = new GraphBuilder();
  const n = o.batch ?? 'N';
  const [c, h, w] = o.input;
  const x = g.input(o.inputName ?? 'input', 'float32', [n, c, h, w]);
  for (const extra of o.extraInputs ?? []) g.input(extra.name, extra.elem, extra.dims);
  const mean = g.node('ReduceMean', [x], { axes: [1, 2, 3], keepdims: 0 });
  const zero = g.node('Mul', [mean, g.scalar('zero', 0)]);
  for (const out of o.outputs) {
    const rank = out.dims.length;
    const z = g.node('Reshape', [zero, g.ints('shape', [-1, ...new Array<number>(rank).fill(1)])]);
    const value = g.init(`${out.name}_value`, [1, ...out.dims], out.values);
    if (out.elem === 'bool') {
      g.node('Greater', [g.node('Add', [value, z]), g.scalar('half', 0.5)], {}, out.name);
      g.output(out.name, 'bool', [n, ...out.dims]);
    } else {
      g.node('Add', [value, z], {}, out.name);
      g.output(out.name, 'float32', [n, ...out.dims]);
    }
  }
  return g.build({ metadata: o.metadata });
}

/** Ultralytics metadata as its exporter writes it (Python literals). */
export function ultralyticsMetadata(o: {
  task: string;
  names: string[];
  imgsz: [number, number];
  description?: string;
  end2end?: boolean;
  args?: string;
}): Record<string, string> {
  const names = `{${o.names.map((n, i) => `${i}: '${n}'`).join(', ')}}`;
  return {
    description: o.description ?? 'Ultralytics YOLO26n model trained on pcb.yaml',
    author: 'Ultralytics',
    version: '8.3.200',
    stride: '32',
    task: o.task,
    batch: '1',
    imgsz: `[${o.imgsz[0]}, ${o.imgsz[1]}]`,
    names,
    args: o.args ?? "{'batch': 1, 'half': False, 'dynamic': False}",
    channels: '3',
    ...(o.end2end === undefined ? {} : { end2end: o.end2end ? 'True' : 'False' }),
  };
}

/** Rows of an end-to-end head ([boxes, 6]: x1, y1, x2, y2, score, class), zero rows up to `rows`. */
export function end2endRows(boxes: number[][], rows: number): number[] {
  const out = new Array<number>(rows * 6).fill(0);
  boxes.forEach((b, i) => b.forEach((v, k) => (out[i * 6 + k] = v)));
  return out;
}

/**
 * A Hugging Face-style classifier as `optimum` exports it: input `pixel_values`
 * [batch_size, num_channels, height, width] (all symbolic), output `logits` [batch_size, 3] =
 * the per-channel means of the input, so the logits show exactly what pre-processing fed it.
 */
export function buildHfClassifier(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('pixel_values', 'float32', ['batch_size', 'num_channels', 'height', 'width']);
  g.node('ReduceMean', [x], { axes: [2, 3], keepdims: 0 }, 'logits');
  g.output('logits', 'float32', ['batch_size', 3]);
  return g.build();
}

/** A ViT `config.json` (labels out of key order, as JSON may list them) and its processor config. */
export const VIT_CONFIG = {
  architectures: ['ViTForImageClassification'],
  model_type: 'vit',
  id2label: { '2': 'missing', '0': 'ok', '1': 'solder_bridge' },
  label2id: { ok: 0, solder_bridge: 1, missing: 2 },
};
export const VIT_PREPROCESSOR = {
  image_processor_type: 'ViTImageProcessor',
  do_resize: true,
  size: { height: 16, width: 16 },
  resample: 2,
  do_rescale: true,
  rescale_factor: 0.00392156862745098,
  do_normalize: true,
  image_mean: [0.5, 0.5, 0.5],
  image_std: [0.5, 0.5, 0.5],
};

/** An 8×8 anomaly map with background 0.1 and the given cells ([x, y, value]), row-major. */
export function anomalyMap(cells: [number, number, number][], side = 8, background = 0.1): number[] {
  const map = new Array<number>(side * side).fill(background);
  for (const [x, y, v] of cells) map[y * side + x] = v;
  return map;
}

/**
 * An anomalib 2.x export: input `input` [N, 3, size, size] (RGB in 0..1), outputs `pred_score`
 * [N, 1], `pred_label` [N] (bool), `anomaly_map` [N, 1, h, w] and `pred_mask` [N, 1, h, w]
 * (bool), in that order, no metadata_props. The label and mask are score/map > 0.5, as the
 * exported post-processor computes them. anomalib 1.x exports use the same helper with raw values
 * and a metadata.json beside the model.
 */
export function buildAnomalibModel(o: {
  score: number;
  map: number[];
  side?: number;
  size?: number;
  batch?: Dim;
}): Uint8Array {
  const side = o.side ?? 8;
  const size = o.size ?? 32;
  return buildConstantModel({
    input: [3, size, size],
    ...(o.batch === undefined ? {} : { batch: o.batch }),
    outputs: [
      { name: 'pred_score', dims: [1], values: [o.score] },
      { name: 'pred_label', dims: [], values: [o.score], elem: 'bool' },
      { name: 'anomaly_map', dims: [1, side, side], values: o.map },
      { name: 'pred_mask', dims: [1, side, side], values: o.map, elem: 'bool' },
    ],
  });
}

/**
 * A lyuwenyu/RT-DETR export (tools/export_onnx.py): inputs `images` [N, 3, size, size] and
 * `orig_target_sizes` int64 [N, 2] = (w, h); outputs `labels` int64 [N, K], `boxes` [N, K, 4]
 * and `scores` [N, K]. As in its post-processor, the boxes are normalised x1, y1, x2, y2 times
 * (w, h, w, h) from `orig_target_sizes`, so the answer shows the size the daemon fed.
 */
export function buildLyuwenyuRtdetr(o: {
  queries: { box: [number, number, number, number]; score: number; label: number }[];
  size?: number;
}): Uint8Array {
  const g = new GraphBuilder();
  const size = o.size ?? 32;
  const k = o.queries.length;
  const x = g.input('images', 'float32', ['N', 3, size, size]);
  const sizes = g.input('orig_target_sizes', 'int64', ['N', 2]);
  const zero = g.node('Reshape', [
    g.node('Mul', [g.node('ReduceMean', [x], { axes: [1, 2, 3], keepdims: 0 }), g.scalar('zero', 0)]),
    g.ints('shape', [-1, 1]),
  ]);
  const wh = g.node('Cast', [sizes], { to: 1 });
  const whwh = g.node('Unsqueeze', [g.node('Concat', [wh, wh], { axis: 1 }), g.ints('axes', [1])]);
  const norm = g.init(
    'boxes_norm',
    [1, k, 4],
    o.queries.flatMap((q) => q.box),
  );
  g.node('Mul', [norm, whwh], {}, 'boxes');
  const labels = g.init(
    'labels_value',
    [1, k],
    o.queries.map((q) => q.label),
  );
  g.node('Cast', [g.node('Add', [labels, zero])], { to: 7 }, 'labels');
  g.node(
    'Add',
    [
      g.init(
        'scores_value',
        [1, k],
        o.queries.map((q) => q.score),
      ),
      zero,
    ],
    {},
    'scores',
  );
  g.output('labels', 'int64', ['N', k]);
  g.output('boxes', 'float32', ['N', k, 4]);
  g.output('scores', 'float32', ['N', k]);
  return g.build();
}
