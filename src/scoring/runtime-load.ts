import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { ScoringSettings } from '../config.js';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import { InferenceWorker } from './inference-worker.js';
import type { ModelManifest, PartialManifest } from './manifest.js';
import { checkModel, readModelFile, type ModelFile } from './model-loader.js';
import type { ModelRuntime } from './model-runtime.js';
import type { LoadRequest, LoadedModel, ProviderAttempt, ValueInfo } from './worker-protocol.js';

/**
 * Loading a model runtime: its workers' sessions created, the model checked against its manifest,
 * warmed. A runtime (scoring/model-runtime.ts) is built only from a load that succeeded.
 */

/**
 * What a runtime is for: `active` answers the line; `candidate` scores a share of frames off the
 * answer path for a shadow trial. A runtime keeps its role for life; a promotion loads the model
 * again as `active` through the normal swap.
 */
export type RuntimeRole = 'active' | 'candidate';

export interface RuntimeOptions {
  modelPath: string;
  role: RuntimeRole;
  /** Aborting it stops a load in progress: the workers are terminated and load() throws CANCELLED. */
  signal?: AbortSignal;
  /** Manifest fields that take precedence over model.json and the ONNX metadata (the twin's). */
  manifest?: PartialManifest;
  settings: ScoringSettings;
  warmupRuns: number;
  deviceId?: number;
  logger: Logger;
  metrics: Metrics;
  /** Told when loading ends and warm-up begins (for the twin's reported status). */
  onPhase?: (phase: 'loading' | 'warming') => void;
}

/** Everything GET /v1/model and the twin report about a loaded model. */
export interface ModelInfo {
  manifest: ModelManifest;
  sha256: string;
  sizeBytes: number;
  modelPath: string;
  executionProvider: string;
  providerAttempts: ProviderAttempt[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  dynamicBatch: boolean;
  maxBatchSize: number;
  loadedAt: string;
  loadMs: number;
}

/**
 * Loads, checks and warms a model. Any failure releases whatever was started and throws an
 * EdgeError with the failing step's code; the caller keeps its current model.
 */
export async function loadRuntime(
  opts: RuntimeOptions,
  build: (info: ModelInfo, workers: InferenceWorker[], frameDims: number[]) => ModelRuntime,
): Promise<ModelRuntime> {
  const started = performance.now();
  const { settings, metrics, logger } = opts;
  const workers: InferenceWorker[] = [];
  const abort = (): void => {
    for (const w of workers) void w.close();
  };
  opts.signal?.addEventListener('abort', abort, { once: true });
  const cancelled = (): void => {
    if (opts.signal?.aborted) throw new EdgeError(ErrorCodes.CANCELLED, 'model load cancelled');
  };
  try {
    cancelled();
    opts.onPhase?.('loading');
    const file = await readModelFile(opts.modelPath);
    const loadOpts = workerLoadOptions(opts, [...settings.executionProviders]);
    const first = new InferenceWorker(`${opts.role}-inference-0`);
    workers.push(first);
    const loaded = await first.load(loadOpts);
    cancelled();
    const checked = checkModel(file, opts.manifest, loaded.inputs, loaded.outputs);
    for (let i = 1; i < settings.workers; i++) {
      workers.push(new InferenceWorker(`${opts.role}-inference-${i}`));
    }
    await Promise.all(workers.slice(1).map((w) => w.load(loadOpts)));
    await Promise.all(workers.map((w) => w.configure(checked.manifest)));
    const info = runtimeInfo(file, loaded, checked, settings, started);
    const runtime = build(info, workers, checked.frameDims);
    cancelled();
    opts.onPhase?.('warming');
    await runtime.warmUp(opts.warmupRuns);
    cancelled();
    info.loadMs = performance.now() - started;
    metrics.modelLoads.inc({ outcome: 'success' });
    metrics.modelLoadDuration.observe(info.loadMs / 1000);
    for (const a of loaded.attempts.filter((x) => !x.ok)) {
      logger.warn(
        { component: 'engine', provider: a.provider, reason: a.error },
        'execution provider unavailable, falling back',
      );
    }
    logger.info(
      {
        component: 'engine',
        role: opts.role,
        modelName: info.manifest.name,
        modelVersion: info.manifest.version,
        provider: info.executionProvider,
        workers: workers.length,
        durationMs: Math.round(info.loadMs),
      },
      'model loaded and warmed',
    );
    return runtime;
  } catch (err) {
    await Promise.all(workers.map((w) => w.close()));
    const e = opts.signal?.aborted
      ? new EdgeError(ErrorCodes.CANCELLED, 'model load cancelled')
      : isEdgeError(err)
        ? err
        : new EdgeError(ErrorCodes.MODEL_LOAD_FAILED, err instanceof Error ? err.message : String(err));
    if (e.code !== ErrorCodes.CANCELLED) metrics.modelLoads.inc({ outcome: e.code });
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', abort);
  }
}

/** What a worker's `load` needs, for the providers to try in order. */
export function workerLoadOptions(
  opts: RuntimeOptions,
  providers: string[],
): Omit<LoadRequest, 'type' | 'id'> {
  const { settings } = opts;
  return {
    modelPath: opts.modelPath,
    providers,
    deviceId: opts.deviceId ?? 0,
    intraOpThreads: settings.intraOpThreads,
    spinning: settings.intraOpSpinning,
  };
}

function runtimeInfo(
  file: ModelFile,
  loaded: LoadedModel,
  checked: ReturnType<typeof checkModel>,
  settings: ScoringSettings,
  started: number,
): ModelInfo {
  const dynamicBatch = checked.staticBatch === undefined;
  return {
    manifest: checked.manifest,
    sha256: file.sha256,
    sizeBytes: file.sizeBytes,
    modelPath: file.modelPath,
    executionProvider: loaded.provider,
    providerAttempts: loaded.attempts,
    inputs: loaded.inputs,
    outputs: loaded.outputs,
    dynamicBatch,
    maxBatchSize: dynamicBatch ? settings.maxBatchSize : checked.staticBatch!,
    loadedAt: new Date().toISOString(),
    loadMs: performance.now() - started,
  };
}
