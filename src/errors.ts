/**
 * The one error class of the daemon. Every failure that crosses a component boundary carries a
 * stable code; callers branch on `code`, never on `message`. `httpStatus` is the single place where
 * codes map to HTTP answers.
 */
export const ErrorCodes = {
  /** The body is not a frame we can decode (empty, truncated, random bytes). */
  FRAME_UNDECODABLE: 'EDGE_ERR_FRAME_UNDECODABLE',
  /** The body is larger than BODY_LIMIT_BYTES. */
  BODY_TOO_LARGE: 'EDGE_ERR_BODY_TOO_LARGE',
  /** The frame decodes to more pixels than MAX_FRAME_PIXELS (decompression-bomb guard). */
  FRAME_TOO_LARGE: 'EDGE_ERR_FRAME_TOO_LARGE',
  /** Content-Type or the detected image format is not one we accept (SVG, GIF, ...). */
  UNSUPPORTED_MEDIA_TYPE: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
  /** Raw frame headers missing or invalid. */
  RAW_HEADERS_INVALID: 'EDGE_ERR_RAW_HEADERS_INVALID',
  /** Raw frame body length does not match width × height × channels. */
  RAW_SIZE_MISMATCH: 'EDGE_ERR_RAW_SIZE_MISMATCH',
  /** A board layout named in the request or twin is not registered. */
  LAYOUT_NOT_FOUND: 'EDGE_ERR_LAYOUT_NOT_FOUND',
  /** A layout or ad-hoc region list is malformed or empty. */
  LAYOUT_INVALID: 'EDGE_ERR_LAYOUT_INVALID',
  /** A region (turned by its angle) reaches outside the posted frame. */
  REGION_OUT_OF_FRAME: 'EDGE_ERR_REGION_OUT_OF_FRAME',
  /** More regions than MAX_REGIONS in one layout or request. */
  TOO_MANY_REGIONS: 'EDGE_ERR_TOO_MANY_REGIONS',
  /** The scoring queue is full; retry after the advertised delay. */
  QUEUE_FULL: 'EDGE_ERR_QUEUE_FULL',
  /** Missing or wrong bearer token. */
  UNAUTHORIZED: 'EDGE_ERR_UNAUTHORIZED',
  /** No warmed model is active, or the daemon is shutting down. */
  NOT_READY: 'EDGE_ERR_NOT_READY',
  /** The request itself is malformed (bad header values, unknown route parameters). */
  BAD_REQUEST: 'EDGE_ERR_BAD_REQUEST',
  /** Route does not exist. */
  NOT_FOUND: 'EDGE_ERR_NOT_FOUND',
  /** Configuration value out of its accepted range. */
  CONFIG_INVALID: 'EDGE_ERR_CONFIG_INVALID',
  /** Model manifest invalid or inconsistent with the ONNX graph. */
  MANIFEST_INVALID: 'EDGE_ERR_MANIFEST_INVALID',
  /** The ONNX file cannot be loaded by onnxruntime. */
  MODEL_LOAD_FAILED: 'EDGE_ERR_MODEL_LOAD_FAILED',
  /** The model's inputs or outputs do not match what its manifest describes. */
  MODEL_SHAPE_MISMATCH: 'EDGE_ERR_MODEL_SHAPE_MISMATCH',
  /** The warm-up inference failed or produced unusable output. */
  MODEL_WARMUP_FAILED: 'EDGE_ERR_MODEL_WARMUP_FAILED',
  /** Inference failed for a batch (worker error or crash). */
  INFERENCE_FAILED: 'EDGE_ERR_INFERENCE_FAILED',
  /** The model URL is not https:// and matches no MODEL_URL_ALLOWLIST prefix. */
  MODEL_URL_REFUSED: 'EDGE_ERR_MODEL_URL_REFUSED',
  /** The model could not be downloaded (HTTP error, network, timeout) after retries. */
  MODEL_DOWNLOAD_FAILED: 'EDGE_ERR_MODEL_DOWNLOAD_FAILED',
  /** The model file is larger than its declared size or MODEL_MAX_BYTES. */
  MODEL_TOO_LARGE: 'EDGE_ERR_MODEL_TOO_LARGE',
  /** The downloaded bytes do not hash to the desired sha256. */
  MODEL_HASH_MISMATCH: 'EDGE_ERR_MODEL_HASH_MISMATCH',
  /** Work was cancelled because a newer desired state superseded it. */
  CANCELLED: 'EDGE_ERR_CANCELLED',
  /** A desired-properties patch (or DESIRED_PROPERTIES_FILE) fails validation. */
  DESIRED_INVALID: 'EDGE_ERR_DESIRED_INVALID',
  /** The model cache under DATA_DIR cannot be written (disk full, permissions). */
  STORAGE_FAILED: 'EDGE_ERR_STORAGE_FAILED',
  /** IoT Hub did not answer a twin request or method in time. */
  IOTHUB_TIMEOUT: 'EDGE_ERR_IOTHUB_TIMEOUT',
  /** Anything not anticipated: a bug. Never carries internal detail to HTTP clients. */
  INTERNAL: 'EDGE_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const HTTP_STATUS: Record<ErrorCode, number> = {
  EDGE_ERR_FRAME_UNDECODABLE: 400,
  EDGE_ERR_BODY_TOO_LARGE: 413,
  EDGE_ERR_FRAME_TOO_LARGE: 413,
  EDGE_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  EDGE_ERR_RAW_HEADERS_INVALID: 400,
  EDGE_ERR_RAW_SIZE_MISMATCH: 422,
  EDGE_ERR_LAYOUT_NOT_FOUND: 404,
  EDGE_ERR_LAYOUT_INVALID: 400,
  EDGE_ERR_REGION_OUT_OF_FRAME: 422,
  EDGE_ERR_TOO_MANY_REGIONS: 413,
  EDGE_ERR_QUEUE_FULL: 429,
  EDGE_ERR_UNAUTHORIZED: 401,
  EDGE_ERR_NOT_READY: 503,
  EDGE_ERR_BAD_REQUEST: 400,
  EDGE_ERR_NOT_FOUND: 404,
  EDGE_ERR_CONFIG_INVALID: 500,
  EDGE_ERR_MANIFEST_INVALID: 500,
  EDGE_ERR_MODEL_LOAD_FAILED: 500,
  EDGE_ERR_MODEL_SHAPE_MISMATCH: 500,
  EDGE_ERR_MODEL_WARMUP_FAILED: 500,
  EDGE_ERR_INFERENCE_FAILED: 500,
  EDGE_ERR_MODEL_URL_REFUSED: 500,
  EDGE_ERR_MODEL_DOWNLOAD_FAILED: 500,
  EDGE_ERR_MODEL_TOO_LARGE: 500,
  EDGE_ERR_MODEL_HASH_MISMATCH: 500,
  EDGE_ERR_CANCELLED: 500,
  EDGE_ERR_DESIRED_INVALID: 400,
  EDGE_ERR_STORAGE_FAILED: 500,
  EDGE_ERR_IOTHUB_TIMEOUT: 504,
  EDGE_ERR_INTERNAL: 500,
};

export class EdgeError extends Error {
  readonly code: ErrorCode;
  /** Structured context for logs; never sent to HTTP clients unless `expose` is set. */
  readonly context: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    context: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'EdgeError';
    this.code = code;
    this.context = context;
  }

  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }
}

export function isEdgeError(err: unknown): err is EdgeError {
  return err instanceof EdgeError;
}

/** Serialisable form used across worker_threads (Error subclasses lose their class there). */
export interface SerializedError {
  code: ErrorCode;
  message: string;
  context?: Record<string, unknown>;
}

export function serializeError(err: unknown): SerializedError {
  if (isEdgeError(err)) return { code: err.code, message: err.message, context: err.context };
  const message = err instanceof Error ? err.message : String(err);
  return { code: ErrorCodes.INTERNAL, message };
}

export function deserializeError(e: SerializedError): EdgeError {
  return new EdgeError(e.code, e.message, e.context ?? {});
}
