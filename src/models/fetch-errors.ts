import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';

/** The errors a model download ends with, each with its code. */

/** TLS verification failures do not heal by retrying: fail at once with the reason. */
export function isPermanentNetworkError(err: unknown): boolean {
  const code = errCode(err);
  return (
    code !== undefined &&
    /^(ERR_TLS_CERT|CERT_|UNABLE_TO_(GET|VERIFY)|DEPTH_ZERO_SELF_SIGNED|SELF_SIGNED_CERT)/.test(code)
  );
}

function errCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}

/** For logs and error context only: the error's code, else its class name. Never branched on. */
export function reasonOf(err: unknown): string {
  return errCode(err) ?? (err instanceof Error ? err.name : typeof err);
}

export function cancelled(cause?: unknown): EdgeError {
  return new EdgeError(ErrorCodes.CANCELLED, 'model download cancelled', {}, { cause });
}

export function storageFailed(err: unknown, message: string): EdgeError {
  if (isEdgeError(err)) return err;
  return new EdgeError(ErrorCodes.STORAGE_FAILED, message, { reason: reasonOf(err) }, { cause: err });
}

export function tooLarge(
  limit: number,
  declared: number | undefined,
  maxBytes: number,
  seen: { announced?: number; received?: number },
): EdgeError {
  return new EdgeError(ErrorCodes.MODEL_TOO_LARGE, 'model file is larger than allowed', {
    limit,
    declared,
    maxBytes,
    ...seen,
  });
}

export function hashMismatch(
  expected: string,
  actual: string,
  bytes: number,
  declared: number | undefined,
): EdgeError {
  return new EdgeError(ErrorCodes.MODEL_HASH_MISMATCH, 'model file does not match its sha256', {
    expected,
    actual,
    sizeBytes: bytes,
    declaredSizeBytes: declared,
  });
}
