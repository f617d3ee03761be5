import type { PartialManifest } from './manifest.js';

/**
 * Which detection family an Ultralytics export is, from its ONNX `metadata_props`
 * (docs/model-families.md says where each key comes from):
 * - `end2end: True` (YOLO26, YOLOv10) or `nms: True` inside `args` (YOLOv8/11 exported with
 *   `nms=True`): the head gives final boxes, `yolo-end2end`;
 * - a description naming RT-DETR (`Ultralytics rtdetr-l model …`): `rtdetr`, stretched input;
 * - `task: obb`: `yolo-obb`, or `yolo-obb-end2end` with `end2end: True` (YOLO26);
 * - `task: segment`: `yolo-seg`, or `yolo-seg-end2end` with `end2end: True` or `nms=True`;
 * - otherwise the raw YOLOv8 head, `yolov8`.
 * Ultralytics writes Python literals (`True`, `{'nms': True}`).
 */
export function ultralyticsDetection(
  props: Record<string, string>,
): Pick<PartialManifest, 'input' | 'output'> {
  if (/rt-?detr/i.test(props.description ?? '')) {
    return { input: { resize: 'stretch' }, output: { format: 'rtdetr' } };
  }
  const end2end = pythonTrue(props.end2end);
  const nms = /['"]nms['"]\s*:\s*True\b/.test(props.args ?? '');
  if (props.task === 'obb') return { output: { format: end2end ? 'yolo-obb-end2end' : 'yolo-obb' } };
  if (props.task === 'segment')
    return { output: { format: end2end || nms ? 'yolo-seg-end2end' : 'yolo-seg' } };
  return { output: { format: end2end || nms ? 'yolo-end2end' : 'yolov8' } };
}

function pythonTrue(v: string | undefined): boolean {
  return v !== undefined && /^\s*(True|true|1)\s*$/.test(v);
}

/**
 * What the output names alone say: anomalib 2.x writes no `metadata_props` but names its outputs
 * `pred_score`, `pred_label`, `anomaly_map`, `pred_mask`; lyuwenyu/RT-DETR names them `labels`,
 * `boxes`, `scores`.
 */
export function familyFromOutputs(outputs: readonly { name: string }[]): PartialManifest {
  const names = new Set(outputs.map((o) => o.name));
  if (names.has('anomaly_map') && names.has('pred_score')) return { task: 'anomaly' };
  // lyuwenyu/RT-DETR (tools/export_onnx.py): outputs labels, boxes, scores; stretched 0..1 input.
  if (names.has('labels') && names.has('boxes') && names.has('scores')) {
    return { task: 'detection', input: { resize: 'stretch' }, output: { format: 'rtdetr-lyuwenyu' } };
  }
  return {};
}
