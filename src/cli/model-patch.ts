import { parseArgs } from 'node:util';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { isEdgeError } from '../errors.js';
import { checkModel, readModelFile } from '../scoring/model-loader.js';
import type { PartialManifest } from '../scoring/manifest.js';
import type { DesiredModel } from '../models/published-model.js';
import { parseDesired } from '../twin/desired.js';
import { checkModelUrl } from '../models/fetcher.js';
import { computeReference } from '../drift/reference-builder.js';

const USAGE = `usage: edge-scorer model-patch <model.onnx> --url <https://…/model.onnx> [--version V] [--name N] [--allow-prefix P] [--reference <folder>]

Prints the desired-properties patch that makes every daemon of a deployment serve this model:
{"model": {manifest…, "url", "sha256", "sizeBytes"}}. The manifest comes from model.json beside the
file, the ONNX metadata and the graph itself, checked as the daemon will check it. With --reference,
the frames of that folder (JPEG, PNG, BMP, TIFF, WebP; a few hundred the model was validated on)
are scored and measured as the daemon will measure the line, and their profile travels in the
manifest's "reference" block, so daemons measure drift against it. Paste it into the
module's properties.desired in a deployment, or:
  az iot hub module-twin update -n HUB -d DEVICE -m edge-scorer --desired "$(edge-scorer model-patch …)"`;

/**
 * The desired `model` block for a model file: the manifest (model.json beside the file, ONNX
 * metadata, the graph), checked as the daemon will check it, plus url, sha256 and size. Throws
 * EdgeError (a refused URL, a model the daemon would refuse).
 */
export async function modelBlock(
  file: string,
  opts: { url: string; version?: string; name?: string; allowPrefix?: string[]; reference?: string },
): Promise<DesiredModel> {
  checkModelUrl(opts.url, opts.allowPrefix ?? []);
  const modelPath = path.resolve(file);
  const model = await readModelFile(modelPath);
  const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] });
  const describe = (meta: readonly ort.InferenceSession.ValueMetadata[]) =>
    meta.map((m) => ({
      name: m.name,
      type: m.isTensor ? String(m.type) : 'non-tensor',
      dims: m.isTensor ? [...m.shape] : [],
    }));
  const override: PartialManifest = {
    ...(opts.version ? { version: opts.version } : {}),
    ...(opts.name ? { name: opts.name } : {}),
  };
  try {
    const { manifest } = checkModel(
      model,
      override,
      describe(session.inputMetadata),
      describe(session.outputMetadata),
    );
    const block: DesiredModel = {
      ...manifest,
      url: opts.url,
      sha256: model.sha256,
      sizeBytes: model.sizeBytes,
    };
    if (opts.reference) block.reference = await computeReference(modelPath, opts.reference, override);
    return block;
  } finally {
    await session.release();
  }
}

/** `edge-scorer model-patch`: returns the process exit code. */
export async function modelPatchCli(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        version: { type: 'string' },
        name: { type: 'string' },
        'allow-prefix': { type: 'string', multiple: true },
        reference: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(`${USAGE}\n`);
    return 0;
  }
  const file = positionals[0];
  if (!file || !values.url || positionals.length > 1) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  try {
    const model = await modelBlock(file, {
      url: values.url,
      ...(values.version ? { version: values.version } : {}),
      ...(values.name ? { name: values.name } : {}),
      allowPrefix: values['allow-prefix'] ?? [],
      ...(values.reference ? { reference: values.reference } : {}),
    });
    const patch = { model };
    parseDesired(patch);
    out(`${JSON.stringify(patch, null, 2)}\n`);
    return 0;
  } catch (err) {
    const message = isEdgeError(err) ? `${err.code}: ${err.message}` : String(err);
    process.stderr.write(`edge-scorer model-patch: ${message}\n`);
    return 1;
  }
}
