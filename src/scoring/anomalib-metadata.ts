import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { PartialManifest } from './manifest.js';

/**
 * anomalib 1.x writes a `metadata.json` beside its ONNX export with the thresholds and the
 * min/max that its min-max normalisation needs (docs/model-families.md, "Anomaly detection"):
 * `image_threshold`, `pixel_threshold`, and `min`/`max` (anomalib 0.x: `pred_scores.min`…,
 * `anomaly_maps.min`…; the smaller min and the larger max are taken, as 1.x's single MinMax
 * metric over scores and maps holds). No metadata.json, or one without thresholds: undefined.
 */
export async function readAnomalibMetadata(modelDir: string): Promise<PartialManifest | undefined> {
  const file = path.join(modelDir, 'metadata.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new EdgeError(ErrorCodes.MANIFEST_INVALID, 'metadata.json is not valid JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
  const m = json as Record<string, unknown>;
  const num = (k: string): number | undefined => {
    const v = m[k];
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  };
  const imageThreshold = num('image_threshold');
  const pixelThreshold = num('pixel_threshold') ?? imageThreshold;
  if (imageThreshold === undefined || pixelThreshold === undefined) return undefined;
  const mins = [num('min'), num('pred_scores.min'), num('anomaly_maps.min')].filter((v) => v !== undefined);
  const maxs = [num('max'), num('pred_scores.max'), num('anomaly_maps.max')].filter((v) => v !== undefined);
  if (mins.length === 0 || maxs.length === 0) {
    throw new EdgeError(
      ErrorCodes.MANIFEST_INVALID,
      'metadata.json has thresholds but no min/max to normalise with',
    );
  }
  const min = Math.min(...mins);
  const max = Math.max(...maxs);
  if (!(max > min)) throw new EdgeError(ErrorCodes.MANIFEST_INVALID, 'metadata.json: max must be above min');
  return {
    task: 'anomaly',
    output: { format: 'anomalib', anomalyNormalization: { imageThreshold, pixelThreshold, min, max } },
  };
}
