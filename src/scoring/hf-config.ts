import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { InputSpec, PartialManifest } from './manifest.js';

/**
 * Hugging Face and timm classifiers (docs/model-families.md, "Hugging Face / timm classifiers"):
 * the labels and the pre-processing travel in JSON files beside the model, not in the ONNX file.
 * - `config.json`: `id2label` (string keys "0", "1", …) from transformers, or `label_names`
 *   from timm; timm's `pretrained_cfg` also carries `input_size`, `mean` and `std`.
 * - `preprocessor_config.json` (transformers' image processors): `size` ({height, width} or
 *   {shortest_edge}), `crop_size` with `do_center_crop`, `do_rescale`/`rescale_factor`,
 *   `do_normalize`/`image_mean`/`image_std`.
 * The result is a manifest fragment below model.json and the twin's manifest, above the ONNX
 * metadata. No config.json beside the model: undefined.
 */
export async function readHfConfig(modelDir: string): Promise<PartialManifest | undefined> {
  const config = await readJson(path.join(modelDir, 'config.json'));
  if (config === undefined) return undefined;
  const labels = labelsOf(config);
  if (labels === undefined) return undefined;
  const out: PartialManifest = {
    task: 'classification',
    labels,
    output: { format: 'logits' },
    input: { color: 'rgb', layout: 'nchw', dtype: 'float32' },
  };
  const timm = asObject(config.pretrained_cfg);
  if (timm) Object.assign(out.input!, timmInput(timm));
  const pre = await readJson(path.join(modelDir, 'preprocessor_config.json'));
  if (pre) Object.assign(out.input!, processorInput(pre));
  return out;
}

type Json = Record<string, unknown>;

async function readJson(file: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(text);
    const obj = asObject(value);
    if (obj) return obj;
  } catch {
    // reported below
  }
  throw new EdgeError(ErrorCodes.MANIFEST_INVALID, `${path.basename(file)} is not a JSON object`);
}

function asObject(v: unknown): Json | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}

const invalid = (why: string): EdgeError => new EdgeError(ErrorCodes.MANIFEST_INVALID, `config.json: ${why}`);

/** Labels in class-index order; every index from 0 to n − 1 must be named exactly once. */
function labelsOf(config: Json): string[] | undefined {
  const id2label = asObject(config.id2label);
  if (id2label) {
    const entries = Object.entries(id2label);
    const labels = new Array<string>(entries.length);
    for (const [key, value] of entries) {
      const i = /^\d+$/.test(key) ? Number(key) : NaN;
      if (!(i < entries.length) || typeof value !== 'string' || labels[i] !== undefined) {
        throw invalid('id2label must map "0" … "n-1" to label strings');
      }
      labels[i] = value;
    }
    return labels;
  }
  const names = config.label_names;
  if (Array.isArray(names) && names.every((n) => typeof n === 'string')) return names;
  return undefined;
}

function numbers(v: unknown, count?: number): number[] | undefined {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) return undefined;
  return count === undefined || v.length === count ? (v as number[]) : undefined;
}

/** timm's pretrained_cfg: input_size [C, H, W], mean, std (on 0..1 pixels). */
function timmInput(cfg: Json): Partial<InputSpec> {
  const out: Partial<InputSpec> = { scale: 1 / 255, resize: 'stretch' };
  const size = numbers(cfg.input_size, 3);
  if (size) {
    out.height = size[1]!;
    out.width = size[2]!;
  }
  const mean = numbers(cfg.mean);
  const std = numbers(cfg.std);
  if (mean) out.mean = mean;
  if (std) out.std = std;
  if (typeof cfg.crop_pct === 'number' && cfg.crop_pct < 1) out.resize = 'center-crop';
  return out;
}

/** A transformers image processor's settings. */
function processorInput(pre: Json): Partial<InputSpec> {
  const out: Partial<InputSpec> = {};
  out.scale =
    pre.do_rescale === false ? 1 : typeof pre.rescale_factor === 'number' ? pre.rescale_factor : 1 / 255;
  if (pre.do_normalize === false) {
    out.mean = [0];
    out.std = [1];
  } else {
    const mean = numbers(pre.image_mean);
    const std = numbers(pre.image_std);
    if (mean) out.mean = mean;
    if (std) out.std = std;
  }
  const size = asObject(pre.size);
  const crop = asObject(pre.crop_size);
  const dims = (o: Json | undefined): [number, number] | undefined =>
    typeof o?.height === 'number' && typeof o.width === 'number' ? [o.height, o.width] : undefined;
  if (pre.do_center_crop === true && dims(crop)) {
    [out.height, out.width] = dims(crop)!;
    out.resize = 'center-crop';
  } else if (dims(size)) {
    [out.height, out.width] = dims(size)!;
    out.resize = 'stretch';
  } else if (typeof size?.shortest_edge === 'number') {
    out.height = out.width = size.shortest_edge;
    out.resize = 'center-crop';
  }
  return out;
}
