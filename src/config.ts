import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject } from 'ajv';
import { EdgeError, ErrorCodes } from './errors.js';
import { CAPTURE_FIELDS, GPU_FIELDS, LAYOUT_FIELDS } from './config-features.js';

/** Execution providers the daemon knows how to ask onnxruntime for, best first. */
export const EXECUTION_PROVIDERS = ['tensorrt', 'cuda', 'cpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

/** The bundled default model (a hand-built ONNX graph, see scripts/make-default-model.ts). */
export const DEFAULT_MODEL_PATH = fileURLToPath(new URL('../models/default/model.onnx', import.meta.url));

/** How the daemon learns its desired state. */
export type TwinMode = 'iotedge' | 'connection-string' | 'standalone';

/**
 * The JSON schemas a field may have: the kinds that `parseVariable` reads from a string and
 * `describeSchema` puts into words. A schema also gives its field's type (`SchemaValue`).
 */
export type FieldSchema =
  | { readonly type: 'integer' | 'number'; readonly minimum: number; readonly maximum: number }
  | { readonly type: 'boolean' }
  | { readonly type: 'string'; readonly minLength: number; readonly pattern?: string }
  | { readonly enum: readonly string[] }
  | {
      readonly type: 'array';
      readonly items:
        { readonly enum: readonly string[] } | { readonly type: 'string'; readonly minLength: number };
      readonly minItems?: number;
      readonly maxItems?: number;
      readonly uniqueItems?: boolean;
    };

/** The type of the values a schema accepts (what ajv lets through is exactly this). */
export type SchemaValue<S> = S extends { readonly enum: readonly (infer E)[] }
  ? E
  : S extends { readonly type: 'integer' | 'number' }
    ? number
    : S extends { readonly type: 'boolean' }
      ? boolean
      : S extends { readonly type: 'string' }
        ? string
        : S extends { readonly type: 'array'; readonly items: infer I }
          ? SchemaValue<I>[]
          : never;

/** One environment variable. */
export interface Field {
  readonly env: string;
  /** What it is, its unit and range, for the README's configuration reference. */
  readonly doc: string;
  readonly schema: FieldSchema;
  /** As it would be written in the environment; without one the value is undefined when unset. */
  readonly default: string | undefined;
  /** Never echoed in a validation message. */
  readonly secret?: boolean;
}

/** A table of fields as the values they give: undefined only where a field has no default. */
export type FieldValues<T extends Record<string, Field>> = {
  -readonly [K in keyof T]: T[K]['default'] extends string
    ? SchemaValue<T[K]['schema']>
    : SchemaValue<T[K]['schema']> | undefined;
};

/**
 * The scoring fields: the environment gives their defaults and the twin's desired `scoring` block
 * overrides them (README, "Model lifecycle: the module twin"), validated by the same schemas.
 */
export const SCORING_FIELDS = {
  executionProviders: {
    env: 'EXECUTION_PROVIDERS',
    doc: 'onnxruntime execution providers tried in order (`tensorrt`, `cuda`, `cpu`); the first that loads serves, CPU is always the last resort.',
    schema: {
      type: 'array',
      minItems: 1,
      maxItems: EXECUTION_PROVIDERS.length,
      uniqueItems: true,
      items: { enum: EXECUTION_PROVIDERS },
    },
    default: 'tensorrt,cuda,cpu',
  },
  maxBatchSize: {
    env: 'MAX_BATCH_SIZE',
    doc: 'Most frames one inference call takes when the model batch dimension is dynamic.',
    schema: { type: 'integer', minimum: 1, maximum: 256 },
    default: '8',
  },
  maxBatchDelayMs: {
    env: 'MAX_BATCH_DELAY_MS',
    doc: 'How long, ms, an idle worker waits for a batch to fill before running what it has.',
    schema: { type: 'number', minimum: 0, maximum: 1000 },
    default: '2',
  },
  workers: {
    env: 'WORKERS',
    doc: 'Inference worker threads, each with its own onnxruntime session.',
    schema: { type: 'integer', minimum: 1, maximum: 64 },
    default: '1',
  },
  maxQueue: {
    env: 'MAX_QUEUE',
    doc: 'Frames admitted but not yet dispatched to a worker; above this new frames get 429.',
    schema: { type: 'integer', minimum: 1, maximum: 100000 },
    default: '64',
  },
  intraOpThreads: {
    env: 'INTRA_OP_THREADS',
    doc: 'onnxruntime intra-op threads per worker; 0 = onnxruntime default (one per core).',
    schema: { type: 'integer', minimum: 0, maximum: 256 },
    default: '0',
  },
  intraOpSpinning: {
    env: 'INTRA_OP_SPINNING',
    doc: 'Let onnxruntime intra-op threads spin-wait between runs (`true`/`false`). Off by default: spinning threads take the cores that decode the next frames.',
    schema: { type: 'boolean' },
    default: 'false',
  },
} as const satisfies Record<string, Field>;

/**
 * Every environment variable the daemon reads, in the order the README lists them: `Config` is
 * typed from this table, the README's configuration table is generated from it
 * (`npm run docs:config`) and a test keeps the two in sync.
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
  },
  logLevel: {
    env: 'LOG_LEVEL',
    doc: 'pino log level.',
    schema: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: 'info',
  },
  enableConsole: {
    env: 'ENABLE_CONSOLE',
    doc: 'Serve the operator console at `/` on the API port (same token rule as the API; reachable where the port is: loopback in the container).',
    schema: { type: 'boolean' },
    default: 'true',
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
  },
  maxFramePixels: {
    env: 'MAX_FRAME_PIXELS',
    doc: 'Largest decoded frame, width × height pixels (413 above; guards against decompression bombs).',
    schema: { type: 'integer', minimum: 1, maximum: 1_000_000_000 },
    default: String(100_000_000),
  },
  ...LAYOUT_FIELDS,
  ...SCORING_FIELDS,
  warmupRuns: {
    env: 'WARMUP_RUNS',
    doc: 'Inference runs on a blank frame before a model is declared ready.',
    schema: { type: 'integer', minimum: 1, maximum: 100 },
    default: '2',
  },
  shutdownTimeoutMs: {
    env: 'SHUTDOWN_TIMEOUT_MS',
    doc: 'Deadline, ms, for a graceful stop after SIGTERM; then the process exits regardless.',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '25000',
  },
  requestTimeoutMs: {
    env: 'REQUEST_TIMEOUT_MS',
    doc: 'Deadline, ms, for receiving a whole request (slow senders are cut off with 408).',
    schema: { type: 'integer', minimum: 1000, maximum: 600000 },
    default: '30000',
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
  desiredPropertiesPollMs: {
    env: 'DESIRED_PROPERTIES_POLL_MS',
    doc: 'How often, ms, DESIRED_PROPERTIES_FILE is checked for a change.',
    schema: { type: 'integer', minimum: 10, maximum: 600000 },
    default: '1000',
  },
  modelUrlAllowlist: {
    env: 'MODEL_URL_ALLOWLIST',
    doc: 'Comma-separated URL prefixes that may use http:// or file:// for model downloads; https:// is always allowed.',
    schema: { type: 'array', items: { type: 'string', minLength: 1 } },
    default: '',
  },
  modelMaxBytes: {
    env: 'MODEL_MAX_BYTES',
    doc: 'Largest model file accepted for download, bytes.',
    schema: { type: 'integer', minimum: 1024, maximum: 17179869184 },
    default: String(2 * 1024 * 1024 * 1024),
  },
  modelDownloadTimeoutMs: {
    env: 'MODEL_DOWNLOAD_TIMEOUT_MS',
    doc: 'Per-attempt connect/headers deadline and longest stall without bytes for model downloads, ms.',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '30000',
  },
  modelDownloadRetries: {
    env: 'MODEL_DOWNLOAD_RETRIES',
    doc: 'Attempts after the first for a model download that failed on a network error, a stall, 408, 429 or 5xx; each resumes where the last stopped when the server allows it.',
    schema: { type: 'integer', minimum: 0, maximum: 100 },
    default: '5',
  },
  modelDownloadBackoffMs: {
    env: 'MODEL_DOWNLOAD_BACKOFF_MS',
    doc: "Wait before the first retry of a model download, ms, doubling per attempt up to 60 s (with jitter); a server's Retry-After overrides it.",
    schema: { type: 'integer', minimum: 10, maximum: 60000 },
    default: '1000',
  },
  modelCacheVersions: {
    env: 'MODEL_CACHE_VERSIONS',
    doc: 'Model versions kept in the cache under DATA_DIR (rollback targets).',
    schema: { type: 'integer', minimum: 1, maximum: 100 },
    default: '3',
  },
  twinTimeoutMs: {
    env: 'TWIN_TIMEOUT_MS',
    doc: 'Deadline for twin requests and IoT Hub connects, ms; a twin request past it recreates the client.',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '15000',
  },
  twinRefreshMs: {
    env: 'TWIN_REFRESH_MS',
    doc: 'Full twin GET this often while connected, ms: catches desired changes missed during reconnects the SDK makes on its own (SAS token renewal).',
    schema: { type: 'integer', minimum: 500, maximum: 86400000 },
    default: '300000',
  },
  modelRetryMs: {
    env: 'MODEL_RETRY_MS',
    doc: 'A model change that failed for a reason a retry may fix (download failed, disk full, IoT Hub timeout) is retried after this long, ms, doubling per failure up to 5 minutes; the last good model serves meanwhile.',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '10000',
  },
  reportedMinIntervalMs: {
    env: 'REPORTED_MIN_INTERVAL_MS',
    doc: 'Reported-property updates are coalesced and sent at most once per this interval, ms.',
    schema: { type: 'integer', minimum: 0, maximum: 600000 },
    default: '1000',
  },
  reportedRetryMs: {
    env: 'REPORTED_RETRY_MS',
    doc: 'Wait, ms, after a reported-property update failed before it is sent again (with the values set meanwhile).',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '5000',
  },
  iothubBackoffInitialMs: {
    env: 'IOTHUB_BACKOFF_INITIAL_MS',
    doc: 'First wait between IoT Hub connection attempts, ms, doubling per failure up to IOTHUB_BACKOFF_MAX_MS (with jitter).',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '1000',
  },
  iothubBackoffMaxMs: {
    env: 'IOTHUB_BACKOFF_MAX_MS',
    doc: 'Longest wait between IoT Hub connection attempts, ms (backoff starts at IOTHUB_BACKOFF_INITIAL_MS).',
    schema: { type: 'integer', minimum: 100, maximum: 3600000 },
    default: '60000',
  },
  telemetryBufferItems: {
    env: 'TELEMETRY_BUFFER_ITEMS',
    doc: 'Upstream buffer bound (results, events, stats waiting for IoT Hub); when full the oldest are dropped and counted.',
    schema: { type: 'integer', minimum: 10, maximum: 10000000 },
    default: '100000',
  },
  telemetryMaxMessagesPerSec: {
    env: 'TELEMETRY_MAX_MESSAGES_PER_SEC',
    doc: 'Most IoT Hub messages sent per second, so draining a backlog after an outage does not trip throttling.',
    schema: { type: 'number', minimum: 0.1, maximum: 1000 },
    default: '20',
  },
  telemetrySendTimeoutMs: {
    env: 'TELEMETRY_SEND_TIMEOUT_MS',
    doc: 'Deadline for sending one telemetry message, ms (the SDK would retry for 240 s); a message past it stays buffered and is sent again.',
    schema: { type: 'integer', minimum: 100, maximum: 600000 },
    default: '30000',
  },
  telemetryJournalSyncMs: {
    env: 'TELEMETRY_JOURNAL_SYNC_MS',
    doc: 'Telemetry waiting for IoT Hub is written to a journal under DATA_DIR/telemetry as it is produced, and synced to disk (fdatasync) in groups at most this often, ms: a killed process loses no answered result, a power loss about this interval plus the sync.',
    schema: { type: 'integer', minimum: 5, maximum: 1000 },
    default: '50',
  },
  telemetryFlushTimeoutMs: {
    env: 'TELEMETRY_FLUSH_TIMEOUT_MS',
    doc: 'At stop, how long, ms, pending telemetry may still be sent (at most half of SHUTDOWN_TIMEOUT_MS); the rest is written to DATA_DIR.',
    schema: { type: 'integer', minimum: 0, maximum: 600000 },
    default: '5000',
  },
  ...GPU_FIELDS,
  ...CAPTURE_FIELDS,
} as const satisfies Record<string, Field>;

type ScoringKey = keyof typeof SCORING_FIELDS;

/** Scoring settings; also the shape of the twin's desired `scoring` block. */
export type ScoringSettings = FieldValues<typeof SCORING_FIELDS>;

/** The fields outside `scoring`, as validated. */
type TopLevelValues = Omit<FieldValues<typeof FIELDS>, ScoringKey>;

/** The daemon's configuration: the table's values, scoring nested, plus what is derived from them. */
export type Config = Omit<TopLevelValues, 'modelPath'> & {
  /** Absolute; the bundled model when MODEL_PATH is not set. */
  modelPath: string;
  /** MODEL_PATH was given: under IoT Hub, only then does a local model serve before the twin's. */
  modelPathSet: boolean;
  scoring: ScoringSettings;
  /** iotedge when the IoT Edge runtime's IOTEDGE_* variables are set, else connection string, else standalone. */
  twinMode: TwinMode;
};

/** The JSON schemas of a table of fields, keyed like it; the twin's `scoring` block uses them too. */
export function fieldSchemas(fields: Record<string, Field>): Record<string, FieldSchema> {
  return Object.fromEntries(Object.entries(fields).map(([key, f]) => [key, f.schema]));
}

/** An object of a table's values: a field with a default is always there (the default applies). */
function objectSchema(fields: Record<string, Field>): Record<string, unknown> {
  return {
    type: 'object',
    properties: fieldSchemas(fields),
    required: Object.entries(fields)
      .filter(([, f]) => f.default !== undefined)
      .map(([key]) => key),
  };
}

const isScoringKey = (key: string): boolean => Object.hasOwn(SCORING_FIELDS, key);

const ajv = new Ajv({ allErrors: true, strict: false });
// ajv's type guards: what passes a table's schemas has the type FieldValues derives from them.
const validateScoring = ajv.compile<ScoringSettings>(objectSchema(SCORING_FIELDS));
const validateTopLevel = ajv.compile<TopLevelValues>(
  objectSchema(Object.fromEntries(Object.entries(FIELDS).filter(([key]) => !isScoringKey(key)))),
);

const BOOLEANS = new Map(
  Object.entries({ true: true, 1: true, yes: true, false: false, 0: false, no: false }),
);

/** Reads a variable's text as its schema's kind; what does not read is left for the schema to refuse. */
function parseVariable(schema: FieldSchema, raw: string): unknown {
  if ('enum' in schema) return raw;
  switch (schema.type) {
    case 'string':
      return raw;
    case 'integer':
    case 'number':
      return Number(raw.trim());
    case 'boolean':
      return BOOLEANS.get(raw.trim().toLowerCase()) ?? raw;
    case 'array': {
      const items = raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      // Named values are case-insensitive (EXECUTION_PROVIDERS=CUDA); free strings (URL prefixes) are not.
      return 'enum' in schema.items ? items.map((s) => s.toLowerCase()) : items;
    }
  }
}

/**
 * Reads the environment, validates every value against its schema and returns a frozen config.
 * Throws CONFIG_INVALID naming every invalid variable and what it accepts.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const raws = new Map<string, string>();
  const scoring: Record<string, unknown> = {};
  const values: Record<string, unknown> = {};
  for (const [key, f] of Object.entries<Field>(FIELDS)) {
    // An empty variable means "not set": the default applies (HOST= must not bind every interface).
    const given = env[f.env];
    const raw = given === undefined || given === '' ? f.default : given;
    if (raw !== undefined) raws.set(key, raw);
    (isScoringKey(key) ? scoring : values)[key] =
      raw === undefined ? undefined : parseVariable(f.schema, raw);
  }
  // Both run, so one message names every invalid variable.
  const scoringValid = validateScoring(scoring);
  const valuesValid = validateTopLevel(values);
  if (!scoringValid || !valuesValid) {
    throw invalid([...(validateScoring.errors ?? []), ...(validateTopLevel.errors ?? [])], raws);
  }
  const config: Config = {
    ...values,
    modelPath: path.resolve(values.modelPath ?? DEFAULT_MODEL_PATH),
    modelPathSet: values.modelPath !== undefined,
    dataDir: path.resolve(values.dataDir),
    desiredPropertiesFile: values.desiredPropertiesFile
      ? path.resolve(values.desiredPropertiesFile)
      : undefined,
    scoring: Object.freeze(scoring),
    twinMode: env.IOTEDGE_WORKLOADURI
      ? 'iotedge'
      : values.iothubConnectionString
        ? 'connection-string'
        : 'standalone',
  };
  return Object.freeze(config);
}

/** One line per invalid variable, in table order; a secret's value is never shown. */
function invalid(errors: ErrorObject[], raws: ReadonlyMap<string, string>): EdgeError {
  // An error's instancePath starts with the field's key: /port, /executionProviders/1.
  const bad = new Set(errors.map((e) => e.instancePath.split('/')[1]));
  const problems = Object.entries<Field>(FIELDS)
    .filter(([key]) => bad.has(key))
    .map(([key, f]) => {
      const shown = f.secret ? '(redacted)' : JSON.stringify(raws.get(key));
      return `${f.env}=${shown} is invalid: accepts ${describeSchema(f.schema)}`;
    });
  const message = problems.length > 0 ? problems.join('; ') : ajv.errorsText(errors);
  return new EdgeError(ErrorCodes.CONFIG_INVALID, message, { variables: problems.length });
}

/** What a schema accepts, in words, for validation messages and the README. */
export function describeSchema(schema: FieldSchema): string {
  if ('enum' in schema) return `one of ${schema.enum.join(', ')}`;
  switch (schema.type) {
    case 'boolean':
      return 'true or false';
    case 'array': {
      const what =
        'enum' in schema.items ? `values among ${schema.items.enum.join(', ')}` : 'non-empty strings';
      return `a comma-separated list of ${what}`;
    }
    case 'integer':
    case 'number':
      return `${schema.type === 'integer' ? 'an integer' : 'a number'} from ${schema.minimum} to ${schema.maximum}`;
    case 'string':
      return schema.minLength > 1
        ? `a string of at least ${schema.minLength} characters`
        : 'a non-empty string';
  }
}
