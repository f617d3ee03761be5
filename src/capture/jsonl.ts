import type { CaptureRecord } from './record.js';

/**
 * One line of an AzureML AutoML-for-images JSONL file (docs/capture.md, "Training data"):
 * `image_url` through a datastore path, `image_details`, and `label` — a class name for
 * classifiers, boxes `{label, topX, topY, bottomX, bottomY}` normalised to 0..1 for detectors.
 * `label_source` says whose answer it is: `human` (an operator's label) or `model` (what the
 * model said, where nobody has looked yet).
 */
export interface JsonlLine {
  image_url: string;
  image_details: { format: string; width: number; height: number };
  label: string | { label: string; topX: number; topY: number; bottomX: number; bottomY: number }[];
  label_source: 'human' | 'model';
}

const clamp = (v: number): number => Math.round(Math.min(1, Math.max(0, v)) * 1e6) / 1e6;

function box(
  label: string,
  b: { x: number; y: number; width: number; height: number },
  w: number,
  h: number,
): { label: string; topX: number; topY: number; bottomX: number; bottomY: number } {
  return {
    label,
    topX: clamp(b.x / w),
    topY: clamp(b.y / h),
    bottomX: clamp((b.x + b.width) / w),
    bottomY: clamp((b.y + b.height) / h),
  };
}

/** The line for an uploaded capture; undefined when it has no blob yet. */
export function jsonlLine(r: CaptureRecord, datastorePath: string): JsonlLine | undefined {
  const blob = r.upload.blob;
  if (!blob) return undefined;
  const { width, height } = r.frame;
  const base = {
    image_url: `${datastorePath.replace(/\/+$/, '')}/${blob}`,
    image_details: { format: r.frame.ext === 'jpg' ? 'jpeg' : r.frame.ext, width, height },
  };
  const detector = r.task === 'detection';
  if (r.label) {
    const l = r.label;
    const cls = l.label ?? (l.verdict === 'ok' ? 'ok' : 'defect');
    return {
      ...base,
      label: detector
        ? (l.boxes ?? []).map((b) => box(b.label ?? cls, b, width, height))
        : l.verdict === 'ok'
          ? 'ok'
          : cls,
      label_source: 'human',
    };
  }
  const a = r.answer;
  return {
    ...base,
    label: detector
      ? (a.detections ?? []).map((d) => box(d.label, d.box, width, height))
      : (a.classification?.[0]?.label ?? (a.defect ? 'defect' : 'ok')),
    label_source: 'model',
  };
}

/** The JSONL blob of a day and camera: beside the frames, `<device>/<camera>/<yyyy>/<mm>/<dd>/annotations.jsonl`. */
export function jsonlBlobOf(frameBlob: string): string {
  return `${frameBlob.slice(0, frameBlob.lastIndexOf('/'))}/annotations.jsonl`;
}

/**
 * Merges the lines already in the blob with the current ones (by `image_url`, current wins), so
 * captures evicted locally keep their line, and a label set later replaces the model's answer.
 */
export function mergeJsonl(existing: string, lines: JsonlLine[]): string {
  const byUrl = new Map<string, string>();
  for (const text of existing.split('\n')) {
    if (!text.trim()) continue;
    try {
      const l = JSON.parse(text) as JsonlLine;
      if (typeof l.image_url === 'string') byUrl.set(l.image_url, text);
    } catch {
      // A line we cannot read is not ours to keep.
    }
  }
  for (const l of lines) byUrl.set(l.image_url, JSON.stringify(l));
  return [...byUrl.values()].join('\n') + '\n';
}
