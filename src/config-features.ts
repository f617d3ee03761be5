/** Environment variables of the features beside scoring, spread into the table in `src/config.ts`. */

/**
 * Environment fields of board layouts (README, "Board layouts"), spread into the table in
 * `config.ts`, which checks them against its field type and generates the README table from them;
 * a file of their own keeps `config.ts` within the size limit.
 */
export const LAYOUT_FIELDS = {
  maxRegions: {
    env: 'MAX_REGIONS',
    doc: 'Most regions in one board layout (413 above).',
    schema: { type: 'integer', minimum: 1, maximum: 10_000 },
    default: '1000',
  },
} as const;

/**
 * Capture's environment variables, spread into the one configuration table in `src/config.ts`
 * (which checks them against its `Field` shape and generates the README from them).
 */
export const CAPTURE_FIELDS = {
  captureBlobConnectionString: {
    env: 'CAPTURE_BLOB_CONNECTION_STRING',
    doc: "Blob Storage connection string captures upload to (the local Blob Storage on IoT Edge module: `DefaultEndpointsProtocol=http;BlobEndpoint=http://<module>:11002/<account>;AccountName=<account>;AccountKey=<key>`). The twin's `capture.upload.sasUrl` wins when both are set. Never logged or reported.",
    schema: { type: 'string', minLength: 1 },
    default: undefined,
    secret: true,
  },
  deviceId: {
    env: 'IOTEDGE_DEVICEID',
    doc: 'Set by the IoT Edge runtime: the device id, first segment of capture blob names (the host name when unset).',
    schema: { type: 'string', minLength: 1 },
    default: undefined,
  },
} as const;

/** The GPU execution providers' settings (README, "How scoring works"). */
export const GPU_FIELDS = {
  gpuDeviceId: {
    env: 'GPU_DEVICE_ID',
    doc: 'CUDA device the cuda and tensorrt providers run on.',
    schema: { type: 'integer', minimum: 0, maximum: 63 },
    default: '0',
  },
  tensorrtFp16: {
    env: 'TENSORRT_FP16',
    doc: 'Let TensorRT build fp16 engines (faster on GPUs with tensor cores; check accuracy per model).',
    schema: { type: 'boolean' },
    default: 'true',
  },
  tensorrtEngineCache: {
    env: 'TENSORRT_ENGINE_CACHE',
    doc: 'Cache built TensorRT engines under DATA_DIR/tensorrt-cache, so a restart does not rebuild them for minutes.',
    schema: { type: 'boolean' },
    default: 'true',
  },
} as const;
