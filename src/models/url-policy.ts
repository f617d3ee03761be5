import { EdgeError, ErrorCodes } from '../errors.js';

/**
 * Applies the model URL policy: `https://` always; `http://` and `file://` only under one of the
 * allowlisted prefixes. The URL is normalised first (`..` segments, percent-encoded dots, case of
 * scheme and host), so a prefix cannot be escaped by path tricks. Throws MODEL_URL_REFUSED.
 */
export function checkModelUrl(raw: string, allowlist: readonly string[]): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new EdgeError(ErrorCodes.MODEL_URL_REFUSED, 'model URL is not an absolute URL');
  }
  const context = { scheme: url.protocol, source: describeUrl(url) };
  if (url.protocol === 'https:') return url;
  if (url.protocol !== 'http:' && url.protocol !== 'file:') {
    throw new EdgeError(
      ErrorCodes.MODEL_URL_REFUSED,
      `model URL scheme ${url.protocol} is not allowed`,
      context,
    );
  }
  if (url.protocol === 'file:' && url.hostname !== '' && url.hostname !== 'localhost') {
    throw new EdgeError(ErrorCodes.MODEL_URL_REFUSED, 'file:// model URLs must name a local path', context);
  }
  const href = url.href;
  const allowed = allowlist.some((prefix) => {
    const normalised = normalisePrefix(prefix);
    return normalised !== undefined && href.startsWith(normalised);
  });
  if (!allowed) {
    throw new EdgeError(
      ErrorCodes.MODEL_URL_REFUSED,
      `${url.protocol}// model URLs must match a MODEL_URL_ALLOWLIST prefix`,
      context,
    );
  }
  return url;
}

/** Empty entries (from `''.split(',')`) must never allow everything; unparsable ones allow nothing. */
function normalisePrefix(prefix: string): string | undefined {
  const trimmed = prefix.trim();
  if (trimmed === '') return undefined;
  try {
    // An origin-only prefix gains its "/" here, so `http://mirror` does not admit `http://mirror.evil`.
    return new URL(trimmed).href;
  } catch {
    return undefined;
  }
}

/** Origin and path only: query strings carry SAS tokens, user info carries passwords. */
export function describeUrl(url: URL): string {
  return url.protocol === 'file:' ? url.pathname : `${url.origin}${url.pathname}`;
}

