/**
 * The page's one way to the daemon: same-origin requests to /v1/console/* (and, for the review
 * view, /v1/model and /v1/captures), with the API token when the daemon asks for one (kept for
 * this browser tab only, in sessionStorage).
 */

const TOKEN_KEY = 'edge-scorer-token';

/** Raised when the daemon answers 401: the page asks for the token, then tries again. */
export class Unauthorized extends Error {}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(): HeadersInit {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, { headers: headers(), signal: signal ?? null, cache: 'no-store' });
  if (!res.ok) return failure(path, res);
  return (await res.json()) as T;
}

/** The daemon's answer to a request that is not 2xx: its status and error code, when it gave one. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

async function failure(path: string, res: Response): Promise<never> {
  if (res.status === 401) throw new Unauthorized();
  const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  throw new HttpError(res.status, body?.error?.code, body?.error?.message ?? `${path}: HTTP ${res.status}`);
}

/** The bytes behind `path` (an image an <img> could not fetch itself: it cannot send the token). */
export async function getBlob(path: string, signal?: AbortSignal): Promise<Blob> {
  const res = await fetch(path, { headers: headers(), signal: signal ?? null, cache: 'no-store' });
  if (!res.ok) return failure(path, res);
  return res.blob();
}

export async function putJson<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, {
    method: 'PUT',
    headers: { ...headers(), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) return failure(path, res);
  return (await res.json()) as T;
}

/**
 * Reads a server-sent event stream through fetch (EventSource cannot send the token header) and
 * calls `onEvent` for each event; resolves when the stream ends or `signal` aborts.
 */
export async function readEvents(
  path: string,
  signal: AbortSignal,
  onEvent: (event: string, data: string) => void,
  onOpen?: () => void,
): Promise<void> {
  const res = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok || !res.body) throw new Error(`${path}: HTTP ${res.status}`);
  onOpen?.();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length > 0) onEvent(event, data.join('\n'));
    }
  }
}
