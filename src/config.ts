import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { EdgeError, ErrorCodes } from './errors.js';

/** Execution providers the daemon knows how to ask onnxruntime for, best first. */
export const EXECUTION_PROVIDERS = ['tensorrt', 'cuda', 'cpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

/** The bundled default model (a hand-built ONNX graph, see scripts/make-default-model.ts). */
export const DEFAULT_MODEL_PATH = fileURLToPath(new URL('../models/default/model.onnx', import.meta.url));

/** Scoring settings; also the shape of the twin's desired `scoring` block (DESIGN.md §4). */
export interface ScoringSettings {
  executionProviders: ExecutionProvider[];
  maxBatchSize: number;
  maxBatchDelayMs: number;
  workers: number;
  maxQueue: number;
  /** onnxruntime intra-op threads per worker; 0 lets onnxruntime pick (one per core). */
  intraOpThreads: number;
  /** Let onnxruntime's intra-op threads spin between runs: lower latency, but they take cores from decoding. */
  intraOpSpinning: boolean;
}

/** How the daemon learns its desired state. */
export type TwinMode = 'iotedge' | 'connection-string' | 'standalone';

export interface Config {
  host: string;
  port: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  modelPath: string;
  dataDir: string;
  apiToken: string | undefined;
  bodyLimitBytes: number;
  maxFramePixels: number;
  scoring: ScoringSettings;
  warmupRuns: number;
  shutdownTimeoutMs: number;
  requestTimeoutMs: number;
  /** iotedge when the IoT Edge runtime's IOTEDGE_* variables are set, else connection string, else standalone. */
  twinMode: TwinMode;
  iothubConnectionString: string | undefined;
  iothubCaFile: string | undefined;
  desiredPropertiesFile: string | undefined;
  modelUrlAllowlist: string[];
  modelMaxBytes: number;
  modelDownloadTimeoutMs: number;
  modelCacheVersions: number;
  twinTimeoutMs: number;
  twinRefreshMs: number;
  modelRetryMs: number;
  reportedMinIntervalMs: number;
  iothubBackoffMaxMs: number;
  telemetryBufferItems: number;
  telemetryMaxMessagesPerSec: number;
  telemetryJournalSyncMs: number;
  gpuDeviceId: number;
  tensorrtFp16: boolean;
  tensorrtEngineCache: boolean;
}

interface Field {
  env: string;
  /** What it is, its unit and range, for the README's configuration reference. */
  doc: string;
  schema: Record<string, unknown>;
  default: string | undefined;
  parse?: (raw: string) => unknown;
  secret?: boolean;
}

const parseBool = (raw: string): unknown =>
  ({ true: true, '1': true, yes: true, false: false, '0': false, no: false })[raw.toLowerCase()] ?? raw;

const list = (raw: string): string[] =>
  raw
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);

/**
 * Every environment variable the daemon reads. The README's configuration table is generated from
 * this list (`npm run docs:config`) and a test keeps the two in sync.
 */
export const FIELDS = {
  host: {
    env: 'HOST',
    doc: 'Address the HTTP server binds. Loopback by default; the container sets 0.0.0.0 and the deployment publishes the port on the host loopback only.',
    schema: { type: 'string', minLength: 1 },
    default: '127.0.0.1',
  },
  port: {
    env: 'PORT',
    doc: 'HTTP port (0 picks a free port).',
    schema: { type: 'integer', minimum: 0, maximum: 65535 },
    default: '8080',
    parse: Number,
  },
  logLevel: {
    env: 'LOG_LEVEL',
    doc: 'pino log level.',
    schema: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: 'info',
  },
  modelPath: {
    env: 'MODEL_PATH',
    doc: 'Local .onnx served at start-up, with its model.json beside it. Defaults to the bundled demo model.',
    schema: { type: 'string', minLength: 1 },
    default: undefined,
  },
  dataDir: {
    env: 'DATA_DIR',
    doc: 'Directory for the model cache and the telemetry journal.',
    schema: { type: 'string', minLength: 1 },
    default: '.data',
  },
  apiToken: {
    env: 'API_TOKEN',
    doc: 'When set, scoring routes require `Authorization: Bearer <token>` (compared in constant time).',
    schema: { type: 'string', minLength: 8 },
    default: undefined,
    secret: true,
  },
  bodyLimitBytes: {
    env: 'BODY_LIMIT_BYTES',
    doc: 'Largest accepted request body, bytes (413 above).',
    schema: { type: 'integer', minimum: 1024, maximum: 536870912 },
    default: String(64 * 1024 * 1024),
    parse: Number,
  },
  maxFramePixels: {
    env: 'MAX_FRAME_PIXELS',
    doc: 'Largest decoded frame, width × height pixels (413 above; guards against decompression bombs).',
    schema: { type: 'integer', minimum: 1, maximum: 1_000_000_000 },
    default: String(100_000_000),
    parse: Number,
  },
  executionProviders: {
    env: 'EXECUTION_PROVIDERS',
    doc: 'onnxruntime execution providers tried in order (`tensorrt`, `cuda`, `cpu`); the first that loads serves, CPU is always the last resort.',
    schema: {
      type: 'array',
      minItems: 1,
      uniqueItems: true,
      items: { enum: [...EXECUTION_PROVIDERS] },
    },
    default: 'tensorrt,cuda,cpu',
    parse: list,
  },
  maxBatchSize: {
    env: 'MAX_BATCH_SIZE',
    doc: 'Most frames one inference call takes when the model batch dimension is dynamic.',
    schema: { type: 'integer', minimum: 1, maximum: 256 },
    default: '8',
    parse: Number,
  },
  maxBatchDelayMs: {
    env: 'MAX_BATCH_DELAY_MS',
    doc: 'How long, ms, an idle worker waits for a batch to fill before running what it has.',
    schema: { type: 'number', minimum: 0, maximum: 1000 },
    default: '2',
    parse: Number,
  },
  workers: {
    env: 'WORKERS',
    doc: 'Inference worker threads, each with its own onnxruntime session.',
    schema: { type: 'integer', minimum: 1, maximum: 64 },
    default: '1',
    parse: Number,
  },
  maxQueue: {
    env: 'MAX_QUEUE',
    doc: 'Frames admitted but not yet dispatched to a worker; above this new frames get 429.',
    schema: { type: 'integer', minimum: 1, maximum: 100000 },
    default: '64',
    parse: Number,
  },
  intraOpThreads: {
    env: 'INTRA_OP_THREADS',
    doc: 'onnxruntime intra-op threads per worker; 0 = onnxruntime default (one per core).',
    schema: { type: 'integer', minimum: 0, maximum: 256 },
    default: '0',
    parse: Number,
  },
  intraOpSpinning: {
    env: 'INTRA_OP_SPINNING',
    doc: 'Let onnxruntime intra-op threads spin-wait between runs (`true`/`false`). Off by default: spinning threads take the cores that decode the next frames.',
    schema: { type: 'boolean' },
    default: 'false',
    parse: parseBool,
  },
  warmupRuns: {
    env: 'WARMUP_RUNS',
    doc: 'Inference runs on a blank frame before a model is declared ready.',
    schema: { type: 'integer', minimum: 1, maximum: 100 },
    default: '2',
    parse: Number,
  },
  shutdownTimeoutMs: {
    env: 'SHUTDOWN_TIMEOUT_MS',
    doc: 'Deadline, ms, for a graceful stop after SIGTERM; then the process exits regardless.',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '25000',
    parse: Number,
  },
  requestTimeoutMs: {
    env: 'REQUEST_TIMEOUT_MS',
    doc: 'Deadline, ms, for receiving a whole request (slow senders are cut off with 408).',
    schema: { type: 'integer', minimum: 1000, maximum: 600000 },
    default: '30000',
    parse: Number,
  },
  iothubConnectionString: {
    env: 'IOTHUB_CONNECTION_STRING',
    doc: "Module connection string for development outside the IoT Edge runtime (ignored when the runtime's IOTEDGE_* variables are set). Neither: standalone.",
    schema: { type: 'string', minLength: 10, pattern: 'HostName=' },
    default: undefined,
    secret: true,
  },
  iothubCaFile: {
    env: 'IOTHUB_CA_FILE',
    doc: 'PEM file of an extra CA to trust for IoT Hub / a gateway and for model downloads (connection-string mode).',
    schema: { type: 'string', minLength: 1 },
    default: undefined,
  },
  desiredPropertiesFile: {
    env: 'DESIRED_PROPERTIES_FILE',
    doc: 'Standalone mode: a JSON file shaped like the desired properties, watched and reconciled like the twin.',
    schema: { type: 'string', minLength: 1 },
    default: undefined,
  },
  modelUrlAllowlist: {
    env: 'MODEL_URL_ALLOWLIST',
    doc: 'Comma-separated URL prefixes that may use http:// or file:// for model downloads; https:// is always allowed.',
    schema: { type: 'array', items: { type: 'string', minLength: 1 } },
    default: '',
    parse: (raw: string) =>
      raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
  },
  modelMaxBytes: {
    env: 'MODEL_MAX_BYTES',
    doc: 'Largest model file accepted for download, bytes.',
    schema: { type: 'integer', minimum: 1024, maximum: 17179869184 },
    default: String(2 * 1024 * 1024 * 1024),
    parse: Number,
  },
  modelDownloadTimeoutMs: {
    env: 'MODEL_DOWNLOAD_TIMEOUT_MS',
    doc: 'Per-attempt connect/headers deadline and longest stall without bytes for model downloads, ms.',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '30000',
    parse: Number,
  },
  modelCacheVersions: {
    env: 'MODEL_CACHE_VERSIONS',
    doc: 'Model versions kept in the cache under DATA_DIR (rollback targets).',
    schema: { type: 'integer', minimum: 1, maximum: 100 },
    default: '3',
    parse: Number,
  },
  twinTimeoutMs: {
    env: 'TWIN_TIMEOUT_MS',
    doc: 'Deadline for twin requests and IoT Hub connects, ms; a twin request past it recreates the client.',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '15000',
    parse: Number,
  },
  twinRefreshMs: {
    env: 'TWIN_REFRESH_MS',
    doc: 'Full twin GET this often while connected, ms: catches desired changes missed during reconnects the SDK makes on its own (SAS token renewal).',
    schema: { type: 'integer', minimum: 500, maximum: 86400000 },
    default: '300000',
    parse: Number,
  },
  modelRetryMs: {
    env: 'MODEL_RETRY_MS',
    doc: 'A model change that failed for a reason a retry may fix (download failed, disk full, IoT Hub timeout) is retried after this long, ms, doubling per failure up to 5 minutes; the last good model serves meanwhile.',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '10000',
    parse: Number,
  },
  reportedMinIntervalMs: {
    env: 'REPORTED_MIN_INTERVAL_MS',
    doc: 'Reported-property updates are coalesced and sent at most once per this interval, ms.',
    schema: { type: 'integer', minimum: 0, maximum: 600000 },
    default: '1000',
    parse: Number,
  },
  iothubBackoffMaxMs: {
    env: 'IOTHUB_BACKOFF_MAX_MS',
    doc: 'Longest wait between IoT Hub connection attempts, ms (backoff starts at 1 s).',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '60000',
    parse: Number,
  },
  telemetryBufferItems: {
    env: 'TELEMETRY_BUFFER_ITEMS',
    doc: 'Upstream buffer bound (results, events, stats waiting for IoT Hub); when full the oldest are dropped and counted.',
    schema: { type: 'integer', minimum: 10, maximum: 10000000 },
    default: '100000',
    parse: Number,
  },
  telemetryMaxMessagesPerSec: {
    env: 'TELEMETRY_MAX_MESSAGES_PER_SEC',
    doc: 'Most IoT Hub messages sent per second, so draining a backlog after an outage does not trip throttling.',
    schema: { type: 'number', minimum: 0.1, maximum: 1000 },
    default: '20',
    parse: Number,
  },
  telemetryJournalSyncMs: {
    env: 'TELEMETRY_JOURNAL_SYNC_MS',
    doc: 'Telemetry waiting for IoT Hub is written to a journal under DATA_DIR/telemetry as it is produced, and synced to disk (fdatasync) in groups at most this often, ms: a killed process loses no answered result, a power loss about this interval plus the sync.',
    schema: { type: 'integer', minimum: 5, maximum: 1000 },
    default: '50',
    parse: Number,
  },
  gpuDeviceId: {
    env: 'GPU_DEVICE_ID',
    doc: 'CUDA device the cuda and tensorrt providers run on.',
    schema: { type: 'integer', minimum: 0, maximum: 63 },
    default: '0',
    parse: Number,
  },
  tensorrtFp16: {
    env: 'TENSORRT_FP16',
    doc: 'Let TensorRT build fp16 engines (faster on GPUs with tensor cores; check accuracy per model).',
    schema: { type: 'boolean' },
    default: 'true',
    parse: parseBool,
  },
  tensorrtEngineCache: {
    env: 'TENSORRT_ENGINE_CACHE',
    doc: 'Cache built TensorRT engines under DATA_DIR/tensorrt-cache, so a restart does not rebuild them for minutes.',
    schema: { type: 'boolean' },
    default: 'true',
    parse: parseBool,
  },
} satisfies Record<string, Field>;

type FieldKey = keyof typeof FIELDS;

const ajv = new Ajv({ allErrors: true, strict: false });

/**
 * Reads the environment, validates every value against its schema and returns a frozen config.
 * Throws CONFIG_INVALID naming the variable and what it accepts.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const values: Partial<Record<FieldKey, unknown>> = {};
  const problems: string[] = [];
  for (const [key, f] of Object.entries(FIELDS) as [FieldKey, Field][]) {
    // An empty variable means "not set": the default applies (HOST= must not bind every interface).
    const given = env[f.env];
    const raw = given === undefined || given === '' ? f.default : given;
    if (raw === undefined) continue;
    const value = f.parse ? f.parse(raw.trim()) : raw;
    const validate = ajv.compile(f.schema);
    if (!validate(value)) {
      const shown = f.secret ? '(redacted)' : JSON.stringify(raw);
      problems.push(`${f.env}=${shown} is invalid: accepts ${describeSchema(f.schema)}`);
      continue;
    }
    values[key] = value;
  }
  if (problems.length > 0) {
    throw new EdgeError(ErrorCodes.CONFIG_INVALID, problems.join('; '), { variables: problems.length });
  }
  const v = values as Record<FieldKey, never>;
  const config: Config = {
    host: v.host,
    port: v.port,
    logLevel: v.logLevel,
    modelPath: path.resolve((values.modelPath as string | undefined) ?? DEFAULT_MODEL_PATH),
    dataDir: path.resolve(v.dataDir),
    apiToken: values.apiToken as string | undefined,
    bodyLimitBytes: v.bodyLimitBytes,
    maxFramePixels: v.maxFramePixels,
    scoring: Object.freeze({
      executionProviders: v.executionProviders,
      maxBatchSize: v.maxBatchSize,
      maxBatchDelayMs: v.maxBatchDelayMs,
      workers: v.workers,
      maxQueue: v.maxQueue,
      intraOpThreads: v.intraOpThreads,
      intraOpSpinning: v.intraOpSpinning,
    }),
    warmupRuns: v.warmupRuns,
    shutdownTimeoutMs: v.shutdownTimeoutMs,
    requestTimeoutMs: v.requestTimeoutMs,
    twinMode: env.IOTEDGE_WORKLOADURI
      ? 'iotedge'
      : values.iothubConnectionString
        ? 'connection-string'
        : 'standalone',
    iothubConnectionString: values.iothubConnectionString as string | undefined,
    iothubCaFile: values.iothubCaFile as string | undefined,
    desiredPropertiesFile: values.desiredPropertiesFile
      ? path.resolve(values.desiredPropertiesFile as string)
      : undefined,
    modelUrlAllowlist: v.modelUrlAllowlist,
    modelMaxBytes: v.modelMaxBytes,
    modelDownloadTimeoutMs: v.modelDownloadTimeoutMs,
    modelCacheVersions: v.modelCacheVersions,
    twinTimeoutMs: v.twinTimeoutMs,
    twinRefreshMs: v.twinRefreshMs,
    modelRetryMs: v.modelRetryMs,
    reportedMinIntervalMs: v.reportedMinIntervalMs,
    iothubBackoffMaxMs: v.iothubBackoffMaxMs,
    telemetryBufferItems: v.telemetryBufferItems,
    telemetryMaxMessagesPerSec: v.telemetryMaxMessagesPerSec,
    telemetryJournalSyncMs: v.telemetryJournalSyncMs,
    gpuDeviceId: v.gpuDeviceId,
    tensorrtFp16: v.tensorrtFp16,
    tensorrtEngineCache: v.tensorrtEngineCache,
  };
  return Object.freeze(config);
}

export function describeSchema(schema: Record<string, unknown>): string {
  if (schema.type === 'boolean') return 'true or false';
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.join(', ')}`;
  if (schema.type === 'array') {
    const items = schema.items as Record<string, unknown>;
    const what = Array.isArray(items.enum) ? `values among ${items.enum.join(', ')}` : 'non-empty strings';
    return `a comma-separated list of ${what}`;
  }
  if (schema.type === 'integer' || schema.type === 'number') {
    const kind = schema.type === 'integer' ? 'an integer' : 'a number';
    return `${kind} from ${String(schema.minimum)} to ${String(schema.maximum)}`;
  }
  if (typeof schema.minLength === 'number' && schema.minLength > 1) {
    return `a string of at least ${schema.minLength} characters`;
  }
  return 'a non-empty string';
}
