/**
 * What scoring answers for one frame: the shape every output decoder produces and the HTTP routes,
 * telemetry and the twin read (README, "HTTP interface").
 */

export interface Classification {
  label: string;
  score: number;
}

/** Pixels of the frame as posted: top-left corner plus size. */
export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Detection {
  label: string;
  score: number;
  /** For a rotated box: the axis-aligned box around its corners, clipped to the frame. */
  box: Box;
  /** YOLO-OBB: the rotated box in frame pixels, angle in radians (docs/model-families.md). */
  rotatedBox?: { cx: number; cy: number; width: number; height: number; angle: number };
  /** YOLO-OBB: its four corners in frame pixels. */
  corners?: [number, number][];
  /**
   * YOLO segmentation: the instance mask's outer contour in frame pixels (boundary pixel centres,
   * corners only), of its largest part; empty when the mask is empty.
   */
  mask?: { polygon: [number, number][] };
}

export interface RawOutput {
  dims: number[];
  data: number[];
}

/** A connected region of anomalous map pixels, in pixels of the frame as posted. */
export interface AnomalyRegion {
  box: Box;
  /** Frame pixels the region covers (its map pixels × the frame area of one map pixel). */
  area: number;
  /** The highest normalised map value inside the region. */
  peak: number;
}

/** Task anomaly (docs/model-families.md, "Anomaly detection"). */
export interface AnomalyResult {
  /** Normalised image score, 0..1; above `threshold` the frame is a defect. */
  score: number;
  threshold: number;
  regions: AnomalyRegion[];
  /**
   * The normalised map as 8-bit grey over the model input (for `?include=map` and the console),
   * at most 128 a side; `frame` is the rectangle, in frame pixels, that the model input covers
   * (beyond the frame's edges under letterbox padding), where the map lies on the frame.
   */
  map?: { width: number; height: number; data: Uint8Array; frame: Box };
}

export interface FramePrediction {
  defect: boolean;
  /** Task classification: top-K by score, descending. */
  classification?: Classification[];
  /** Task detection: after class-wise NMS, by score descending. */
  detections?: Detection[];
  /** Task anomaly: the image score, the regions and (internally) the map. */
  anomaly?: AnomalyResult;
  /** Task raw: every output tensor as-is, sliced to this frame (`[1, ...rest]`). */
  raw?: Record<string, RawOutput>;
}
