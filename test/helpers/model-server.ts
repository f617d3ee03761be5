import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A model file server on 127.0.0.1:0 for download tests: real HTTP(S), Range/If-Range, ETag and
 * Last-Modified, and per-path misbehaviour. Every mode with `times` applies to the first `times`
 * requests for that path (all of them when `times` is left out); request numbers count from the
 * last `serve()` of the path.
 */

export interface ServeModes {
  /** Body rate in bytes per second. */
  slow?: number;
  /** Destroys the socket after sending `bytes` body bytes (a broken transfer, for resume). */
  failAfter?: { bytes: number; times?: number };
  /** Stops sending after `bytes` body bytes and keeps the socket open (a stalled transfer). */
  stallAfter?: { bytes: number; times?: number };
  /** Answers with this status (and headers, e.g. Retry-After or Location) and no body. */
  status?: { code: number; headers?: Record<string, string>; times?: number };
  /** Accepts the request and never answers it. */
  hang?: { times?: number };
  /** Ignores Range and answers 200 with the whole file. */
  noRange?: boolean;
  /** Sends no Content-Length (chunked), so only the bytes themselves tell the size. */
  noContentLength?: boolean;
  /** Sends ETag and Last-Modified (default true). Without them If-Range never matches. */
  validators?: boolean;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range: string | undefined;
  ifRange: string | undefined;
  /** The status answered; undefined while no answer was sent (hang). */
  status: number | undefined;
}

export interface ModelServer {
  /** `http://127.0.0.1:PORT` or `https://…`. */
  readonly origin: string;
  url(path: string): string;
  /** Registers (or replaces) a file and its modes; resets the path's request count. */
  serve(path: string, bytes: Uint8Array, modes?: ServeModes): void;
  /** New content under the same modes and count: the file changed on the server (new ETag). */
  replace(path: string, bytes: Uint8Array): void;
  /** Every request received, in order. */
  readonly requests: LoggedRequest[];
  /** Stops listening and destroys every connection; leaves no handles. */
  close(): Promise<void>;
}

interface Entry {
  bytes: Uint8Array;
  modes: ServeModes;
  count: number;
  etag: string;
  lastModified: string;
}

let generation = 0;

function describe(bytes: Uint8Array): { etag: string; lastModified: string } {
  generation += 1;
  return {
    etag: `"${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}-${generation}"`,
    // HTTP dates have second resolution: each version of a file gets its own second.
    lastModified: new Date(Date.UTC(2024, 0, 1) + generation * 1000).toUTCString(),
  };
}

function parseRange(header: string, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return end < start ? null : { start, end };
}

function ifRangeMatches(value: string | undefined, entry: Entry): boolean {
  if (value === undefined) return true;
  if (entry.modes.validators === false) return false;
  return value.startsWith('"') || value.startsWith('W/')
    ? value === entry.etag
    : value === entry.lastModified;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Writes a chunk and waits until it reached the socket, or until the response is gone. */
function write(res: http.ServerResponse, chunk: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('close', done);
      resolve();
    };
    res.once('close', done);
    res.write(chunk, () => done());
  });
}

export async function startModelServer(
  opts: { https?: { key: string | Buffer; cert: string | Buffer } } = {},
): Promise<ModelServer> {
  const files = new Map<string, Entry>();
  const requests: LoggedRequest[] = [];
  const sockets = new Set<Socket>();
  const closing = new AbortController();

  async function send(
    res: http.ServerResponse,
    body: Uint8Array,
    modes: ServeModes,
    active: (m: { times?: number } | undefined) => boolean,
  ): Promise<void> {
    const failAt = active(modes.failAfter) ? modes.failAfter?.bytes : undefined;
    const stallAt = active(modes.stallAfter) ? modes.stallAfter?.bytes : undefined;
    const rate = modes.slow;
    const tickMs = 50;
    const chunkSize = rate === undefined ? 64 * 1024 : Math.max(1, Math.floor((rate * tickMs) / 1000));
    let offset = 0;
    for (;;) {
      let next = Math.min(body.length, offset + chunkSize);
      if (failAt !== undefined) next = Math.min(next, failAt);
      if (stallAt !== undefined) next = Math.min(next, stallAt);
      if (next > offset) {
        await write(res, body.subarray(offset, next));
        offset = next;
      }
      if (res.destroyed || closing.signal.aborted) return;
      if (failAt !== undefined && offset >= failAt) {
        res.socket?.destroy();
        return;
      }
      // Stalled: no more bytes; the client gives up, or close() ends the socket.
      if (stallAt !== undefined && offset >= stallAt) return;
      if (offset >= body.length) break;
      if (rate !== undefined) {
        try {
          await sleep(tickMs, undefined, { signal: closing.signal });
        } catch {
          return;
        }
      }
    }
    res.end();
  }

  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const log: LoggedRequest = {
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      ifRange: single(req.headers['if-range']),
      status: undefined,
    };
    requests.push(log);
    const answer = (status: number, headers: http.OutgoingHttpHeaders): void => {
      log.status = status;
      res.writeHead(status, headers);
    };
    const entry = files.get(path);
    if (!entry) {
      answer(404, { 'content-length': 0 });
      res.end();
      return;
    }
    const n = entry.count++;
    const active = (m: { times?: number } | undefined): boolean =>
      m !== undefined && n < (m.times ?? Infinity);
    const { modes } = entry;
    if (active(modes.hang)) return;
    if (modes.status && active(modes.status)) {
      answer(modes.status.code, { 'content-length': 0, ...modes.status.headers });
      res.end();
      return;
    }
    const size = entry.bytes.length;
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'application/octet-stream',
      'accept-ranges': modes.noRange ? 'none' : 'bytes',
    };
    if (modes.validators !== false) {
      headers.etag = entry.etag;
      headers['last-modified'] = entry.lastModified;
    }
    let status = 200;
    let start = 0;
    let end = size - 1;
    const range = req.headers.range;
    if (range !== undefined && !modes.noRange && ifRangeMatches(single(req.headers['if-range']), entry)) {
      const parsed = parseRange(range, size);
      if (parsed === 'unsatisfiable') {
        answer(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': 0 });
        res.end();
        return;
      }
      if (parsed) {
        ({ start, end } = parsed);
        status = 206;
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
      }
    }
    const body = entry.bytes.subarray(start, end + 1);
    if (!modes.noContentLength) headers['content-length'] = body.length;
    answer(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    void send(res, body, modes, active);
  };

  const server = opts.https ? https.createServer({ ...opts.https }, handler) : http.createServer(handler);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Client-side aborts surface here as TLS or socket errors; they are part of the tests.
  server.on('tlsClientError', () => undefined);
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const origin = `${opts.https ? 'https' : 'http'}://127.0.0.1:${port}`;

  let closed: Promise<void> | undefined;
  return {
    origin,
    requests,
    url: (path) => `${origin}${path}`,
    serve(path, bytes, modes = {}) {
      files.set(path, { bytes, modes, count: 0, ...describe(bytes) });
    },
    replace(path, bytes) {
      const entry = files.get(path);
      if (!entry) throw new Error(`${path} is not served`);
      Object.assign(entry, { bytes }, describe(bytes));
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing.abort();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return closed;
    },
  };
}
