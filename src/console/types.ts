/**
 * What the console's API sends to the page (README, "Operator console"). The page's sources
 * (src/console/page/) import these types only, so both sides read one definition.
 */

export interface LiveBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** One frame of the live view: a scaled-down JPEG plus the prediction in frame pixels. */
export interface LiveFrame {
  frameId: string;
  cameraId: string;
  at: string;
  model: { name: string; version: string };
  task: string;
  defect: boolean;
  /** The frame as posted, pixels: boxes are in these units, the thumbnail is scaled from it. */
  width: number;
  height: number;
  classification?: { label: string; score: number }[] | undefined;
  /** Detections; segmentation models add each instance's mask outline (frame pixels). */
  detections?:
    { label: string; score: number; box: LiveBox; mask?: { polygon: [number, number][] } }[] | undefined;
  /**
   * Anomaly models: the image score against its threshold, the defect regions, and the anomaly
   * map as a small grey PNG (base64) with the frame rectangle it covers (the model input's).
   */
  anomaly?:
    | {
        score: number;
        threshold: number;
        regions: { box: LiveBox; peak: number }[];
        map?: { image: string; box: LiveBox } | undefined;
      }
    | undefined;
  timing: { totalMs: number };
  /** The thumbnail, JPEG, base64. */
  image: string;
}

/** One point of the health charts, sampled from the daemon's own counters. */
export interface HealthSample {
  /** Milliseconds since the epoch. */
  t: number;
  framesPerSec: number;
  /** Share of the frames scored in the interval that were defects, 0..1 (null without frames). */
  defectRate: number | null;
  /** Scoring request latency over the interval, milliseconds (null without requests). */
  p50Ms: number | null;
  p99Ms: number | null;
  queueDepth: number;
  /** 429s answered in the interval, per second. */
  rejectedPerSec: number;
  iothubConnected: boolean;
  telemetryBacklog: number;
}

export interface HealthView {
  intervalMs: number;
  twinMode: string;
  samples: HealthSample[];
}

/** A model change as the lifecycle told it, newest first in `ModelView.history`. */
export interface HistoryEntry {
  at: string;
  event: string;
  model: { name?: string | undefined; version?: string | undefined; sha256?: string | undefined };
  previousVersion?: string | null | undefined;
  error?: { code: string; message: string } | undefined;
  durationMs?: number | undefined;
}

export interface ModelView {
  status: string;
  model: {
    name: string;
    version: string;
    task: string;
    sha256: string;
    executionProvider: string;
    loadedAt: string;
  } | null;
  lastError: { code: string; message: string } | null;
  reason?: string | undefined;
  history: HistoryEntry[];
  /** The last desired document the daemon received (URL queries stripped), and its version. */
  desired: { version: number; at: string; document: unknown } | null;
  /** The reported properties as the daemon reports them now (URL queries stripped). */
  reported: unknown;
}
