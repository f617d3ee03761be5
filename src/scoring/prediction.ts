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
  box: Box;
}

export interface RawOutput {
  dims: number[];
  data: number[];
}

export interface FramePrediction {
  defect: boolean;
  /** Task classification: top-K by score, descending. */
  classification?: Classification[];
  /** Task detection: after class-wise NMS, by score descending. */
  detections?: Detection[];
  /** Task raw: every output tensor as-is, sliced to this frame (`[1, ...rest]`). */
  raw?: Record<string, RawOutput>;
}
