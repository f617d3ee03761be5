import type { Dispatcher } from 'undici';
import { EdgeError, ErrorCodes } from '../errors.js';

/** Reading the response headers of a model download: lengths, ranges, validators, redirects. */

export function resolveLocation(location: string, base: URL): string {
  try {
    return new URL(location, base).href;
  } catch {
    throw new EdgeError(ErrorCodes.MODEL_DOWNLOAD_FAILED, 'model server redirects to an invalid URL');
  }
}

export function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

export function validatorOf(headers: Dispatcher.ResponseData['headers']): string | undefined {
  const etag = header(headers, 'etag');
  // If-Range takes strong validators only (RFC 9110 §13.1.5).
  if (etag !== undefined && !etag.startsWith('W/')) return etag;
  return header(headers, 'last-modified');
}

export function parseLength(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value);
}

export function parseContentRange(value: string | undefined): { start: number; total?: number } | undefined {
  const m = value === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim());
  if (!m) return undefined;
  const total = m[3] === '*' ? undefined : Number(m[3]);
  return total === undefined ? { start: Number(m[1]) } : { start: Number(m[1]), total };
}

export function parseUnsatisfiedRange(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /^bytes \*\/(\d+)$/.exec(value.trim());
  return m ? Number(m[1]) : undefined;
}

/** Retry-After as delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

