/**
 * Inference worker thread. onnxruntime-node's `session.run()` blocks its thread for the whole
 * inference, so every session lives here and the main thread only does HTTP, twin and telemetry.
 * One worker owns one session; it runs one batch at a time and post-processes it before answering,
 * so the main thread receives finished predictions.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { EdgeError, ErrorCodes, serializeError } from '../errors.js';
import type { OutputTensor } from './output-shape.js';
import { ORIG_TARGET_SIZES, imageInputIndex, origTargetSizes } from './extra-inputs.js';
import { Postprocessor } from './postprocess.js';
import type { InputSpec } from './manifest.js';
import { decodeSmallPng } from './png-small.js';
import { regionTensor, smallFrameTensor } from './tensor.js';
import type {
  CutRunRequest,
  LoadRequest,
  LoadedModel,
  ProviderAttempt,
  RunRequest,
  WorkerReply,
  WorkerRequest,
  ValueInfo,
} from './worker-protocol.js';

let session: ort.InferenceSession | undefined;
/** Decodes the outputs of the configured model; replaced by each `configure`. */
let postprocessor: Postprocessor | undefined;
let inputName = '';
/** lyuwenyu RT-DETR: the graph also takes each frame's size (scoring/extra-inputs.ts). */
let feedsTargetSizes = false;
let inputType: 'float32' | 'uint8' = 'float32';
let inputSpec: InputSpec | undefined;

function reply(msg: WorkerReply, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer);
}

/** Where onnxruntime-node keeps its native libraries, GPU provider libraries included. */
const ORT_BIN_DIR = path.join(
  path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node')),
  '..',
  'bin',
  'napi-v6',
  process.platform,
  process.arch,
);

/**
 * A CPU-only install (the default, see .npmrc) has no GPU provider libraries: say so instead of
 * letting onnxruntime print a load failure for each session.
 */
function providerLibraryMissing(name: string): string | undefined {
  if (name !== 'cuda' && name !== 'tensorrt') return undefined;
  const lib = `libonnxruntime_providers_${name}.so`;
  if (process.platform !== 'linux' || existsSync(path.join(ORT_BIN_DIR, lib))) return undefined;
  return `${lib} is not installed beside onnxruntime-node (CPU-only install)`;
}

function providerConfig(req: LoadRequest, name: string): ort.InferenceSession.ExecutionProviderConfig {
  if (name === 'cuda' || name === 'tensorrt') return { name, deviceId: req.deviceId };
  return name;
}

async function createSession(
  req: LoadRequest,
): Promise<{ session: ort.InferenceSession; provider: string; attempts: ProviderAttempt[] }> {
  const attempts: ProviderAttempt[] = [];
  const providers = req.providers.includes('cpu') ? req.providers : [...req.providers, 'cpu'];
  for (const provider of providers) {
    const missing = providerLibraryMissing(provider);
    if (missing) {
      attempts.push({ provider, ok: false, error: missing });
      continue;
    }
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: provider === 'cpu' ? ['cpu'] : [providerConfig(req, provider), 'cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      enableCpuMemArena: true,
      ...(req.intraOpThreads > 0 ? { intraOpNumThreads: req.intraOpThreads } : {}),
      interOpNumThreads: 1,
      // Spinning intra-op threads burn the cores that sharp needs to decode the next frames.
      ...(req.spinning ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
    };
    try {
      const s = await ort.InferenceSession.create(req.modelPath, options);
      attempts.push({ provider, ok: true });
      return { session: s, provider, attempts };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      attempts.push({ provider, ok: false, error: message.slice(0, 500) });
      if (provider === 'cpu') {
        throw new EdgeError(
          ErrorCodes.MODEL_LOAD_FAILED,
          `onnxruntime could not load the model: ${message.slice(0, 300)}`,
          {
            attempts,
          },
        );
      }
    }
  }
  throw new EdgeError(ErrorCodes.MODEL_LOAD_FAILED, 'no execution provider could load the model', {
    attempts,
  });
}

function describe(meta: readonly ort.InferenceSession.ValueMetadata[]): ValueInfo[] {
  return meta.map((m) =>
    m.isTensor
      ? { name: m.name, type: String(m.type), dims: [...m.shape] }
      : { name: m.name, type: 'non-tensor', dims: [] },
  );
}

async function load(req: LoadRequest): Promise<LoadedModel> {
  const { session: s, provider, attempts } = await createSession(req);
  session = s;
  const inputs = describe(s.inputMetadata);
  const outputs = describe(s.outputMetadata);
  inputName = inputs[imageInputIndex(inputs)]?.name ?? '';
  feedsTargetSizes = inputs.some((i) => i.name === ORIG_TARGET_SIZES);
  return { provider, attempts, inputs, outputs };
}

type Result = Extract<WorkerReply, { type: 'result' }>;
type Batch = Float32Array | Uint8Array;

/** Runs one batch; `data` holds `batch` frames (padded to a static batch size when needed). */
async function infer(req: Omit<RunRequest, 'type' | 'data' | 'pngs'>, data: Batch): Promise<Result> {
  const { batch, dims } = req;
  if (!session || !postprocessor) throw new EdgeError(ErrorCodes.INTERNAL, 'worker has no session');
  const tensor =
    data instanceof Float32Array
      ? new ort.Tensor('float32', data, [batch, ...dims])
      : new ort.Tensor('uint8', data, [batch, ...dims]);
  const t0 = performance.now();
  let results: ort.InferenceSession.ReturnType;
  try {
    const feeds: Record<string, ort.Tensor> = { [inputName]: tensor };
    if (feedsTargetSizes) {
      feeds[ORIG_TARGET_SIZES] = new ort.Tensor('int64', origTargetSizes(req.geometries, batch), [batch, 2]);
    }
    results = await session.run(feeds);
  } catch (err) {
    throw new EdgeError(ErrorCodes.INFERENCE_FAILED, err instanceof Error ? err.message : String(err));
  }
  const t1 = performance.now();
  const outputs: Record<string, OutputTensor> = {};
  const frames = req.geometries.length;
  for (const [name, value] of Object.entries(results)) {
    let dims = value.dims;
    let data = value.data as OutputTensor['data'];
    if (frames < batch && dims[0] === batch) {
      // A static batch was zero-padded: the padding frames' rows are not anybody's answer.
      dims = [frames, ...dims.slice(1)];
      data = data.subarray(0, (data.length / batch) * frames);
    }
    outputs[name] = { dims, data };
  }
  const predictions = postprocessor.run(session.outputNames, outputs, req.geometries);
  const t2 = performance.now();
  for (const value of Object.values(results)) value.dispose();
  tensor.dispose();
  return { type: 'result', id: req.id, predictions, inferenceMs: t1 - t0, postprocessMs: t2 - t1 };
}

const asBatch = (data: ArrayBuffer): Batch =>
  inputType === 'float32' ? new Float32Array(data) : new Uint8Array(data);

/**
 * The batch tensors this worker fills itself (board regions, PNGs), by length, kept from batch to
 * batch: the worker runs one request at a time, and writing megabytes into fresh memory costs a
 * page fault every 4 KiB (bench/README.md, "Board layouts"). A batch's frames beyond `frames`
 * (a static batch's padding) are zeroed, as in the runtime's own batches.
 */
const keptBatches = new Map<number, Batch>();

function keptBatch(req: { batch: number; dims: number[] }, frames: number): Batch {
  const size = req.dims.reduce((a, b) => a * b, 1);
  const length = req.batch * size;
  let batch = keptBatches.get(length);
  if (batch?.constructor !== (inputType === 'float32' ? Float32Array : Uint8Array)) {
    if (keptBatches.size >= 4) keptBatches.clear();
    batch = inputType === 'float32' ? new Float32Array(length) : new Uint8Array(length);
    keptBatches.set(length, batch);
  }
  batch.fill(0, frames * size);
  return batch;
}

/** Runs a batch, first decoding its deferred PNGs into their places. */
async function run(req: RunRequest): Promise<Result> {
  const { pngs } = req;
  if (!pngs) return infer(req, asBatch(req.data!));
  const started = performance.now();
  const data = req.data ? asBatch(req.data) : keptBatch(req, req.geometries.length);
  const bytes = Buffer.from(pngs.bytes);
  let at = 0;
  const pngMs = pngs.frames.map(({ index, length, placement }) => {
    const t = performance.now();
    const pixels = decodeSmallPng(bytes.subarray(at, (at += length)));
    // Refused (a chunk the decoder does not know, a bad CRC...): its slot is not anybody's answer,
    // and the main thread gives the frame to sharp.
    if (!pixels || !smallFrameTensor(pixels, placement, 'rgb', inputSpec!, { batch: data, index }))
      return null;
    return performance.now() - t;
  });
  const prepareMs = performance.now() - started;
  return { ...(await infer(req, data)), prepareMs, pngMs };
}

/** Cuts a batch of upright board regions straight into one tensor and runs it. */
async function cutRun(req: CutRunRequest): Promise<WorkerReply> {
  const started = performance.now();
  const board = { ...req.board, data: new Uint8Array(req.board.data) };
  const data = keptBatch(req, req.regions.length);
  req.regions.forEach((r, index) => {
    if (!regionTensor(board, r, req.spec, { batch: data, index }))
      throw new EdgeError(ErrorCodes.INTERNAL, 'region too large to cut in a worker');
  });
  const prepareMs = performance.now() - started;
  return { ...(await infer(req, data)), prepareMs };
}

/**
 * Requests are handled one after another, each to its end: a `close` that arrives while a session
 * is still being created waits for it, then releases it. (Handled side by side, the close
 * answered at once, the thread was terminated under the session being created, and the process
 * aborted in onnxruntime's native code: a runtime closed while a replacement worker loaded.)
 */
let handling: Promise<void> = Promise.resolve();

parentPort!.on('message', (msg: WorkerRequest) => {
  handling = handling.then(async () => {
    try {
      switch (msg.type) {
        case 'load':
          reply({ type: 'loaded', id: msg.id, model: await load(msg) });
          break;
        case 'configure':
          postprocessor = new Postprocessor(msg.manifest);
          inputType = msg.manifest.input.dtype;
          inputSpec = msg.manifest.input;
          reply({ type: 'configured', id: msg.id });
          break;
        case 'run':
          reply(await run(msg));
          break;
        case 'cutRun':
          reply(await cutRun(msg));
          break;
        case 'close':
          await session?.release();
          session = undefined;
          reply({ type: 'closed', id: msg.id });
          parentPort!.close();
          break;
      }
    } catch (err) {
      reply({ type: 'error', id: msg.id, error: serializeError(err) });
    }
  });
});
