import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootCertificates } from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import {
  cancelled,
  hashMismatch,
  isPermanentNetworkError,
  reasonOf,
  storageFailed,
  tooLarge,
} from './fetch-errors.js';
import {
  header,
  parseContentRange,
  parseLength,
  parseRetryAfter,
  parseUnsatisfiedRange,
  resolveLocation,
  validatorOf,
} from './http-headers.js';
import { normalizeSha256 } from './store.js';
import { checkModelUrl, describeUrl } from './url-policy.js';

export { checkModelUrl } from './url-policy.js';
export { parseRetryAfter } from './http-headers.js';

/**
 * Downloads model files named by the twin (README, "Model lifecycle: the module twin"): URL policy, size limits, timeouts,
 * retries with backoff, resume with Range, sha256 verification. One transfer per `fetch()` call;
 * the caller moves the verified file into the model store.
 */

export interface ModelFetcherOptions {
  /** MODEL_URL_ALLOWLIST: prefixes under which `http://` and `file://` URLs are accepted. */
  allowlist: readonly string[];
  /** Largest model file accepted, bytes (MODEL_MAX_BYTES); a declared `sizeBytes` can only lower it. */
  maxBytes: number;
  /** Per attempt: TCP+TLS connect timeout and, separately, the wait for response headers, ms. */
  timeoutMs: number;
  /** An attempt is abandoned (and retried, resuming) when no body bytes arrive for this long, ms. */
  stallTimeoutMs: number;
  /** Attempts after the first one, for network errors, stalls, 408, 429 and 5xx. */
  retries: number;
  /** Base of the exponential backoff between attempts, ms (doubled per attempt, with jitter). */
  backoffMs: number;
  /** Upper bound on one wait between attempts, backoff or Retry-After, ms. Default 60 000. */
  maxRetryDelayMs?: number;
  /** An extra trusted CA (PEM) for https downloads, added to Node's bundled root certificates. */
  ca?: string | Buffer;
  logger: Logger;
}

export interface FetchRequest {
  /** https://, or http:// / file:// under an allowlisted prefix. May carry a SAS token: never logged. */
  url: string;
  /** Expected sha256 of the file, 64 hex characters. */
  sha256: string;
  /** Declared size from the twin; a larger file is refused while it streams. */
  sizeBytes?: number;
  /** Where the bytes go: a temp path of the model store. Deleted on any failure. */
  dest: string;
  /** Aborts the transfer at once (CANCELLED), e.g. when a newer desired state supersedes it. */
  signal?: AbortSignal;
  /** Called after every chunk written; `total` when the size is known. */
  onProgress?: (bytes: number, total?: number) => void;
}

export interface FetchResult {
  sizeBytes: number;
}

const DEFAULT_MAX_RETRY_DELAY_MS = 60_000;
const MAX_REDIRECTS = 5;
const FILE_CHUNK_BYTES = 1024 * 1024;

/** The running state of one file transfer across attempts. */
interface Transfer {
  readonly file: FileHandle;
  hash: Hash;
  received: number;
  /** Strong ETag or Last-Modified of the response the bytes came from; sent back as If-Range. */
  validator: string | undefined;
  /** Whether bytes were appended from a 206: a splice that a hash mismatch may be blamed on. */
  resumed: boolean;
}

/** A failed attempt that may be tried again. */
class Retry extends Error {
  constructor(
    /** Short reason for logs and the final error's context. */
    reason: string,
    readonly detail: { status?: number; retryAfterMs?: number; immediate?: boolean } = {},
    options?: ErrorOptions,
  ) {
    super(reason, options);
  }
}

class Stalled extends Error {}

export class ModelFetcher {
  private readonly opts: ModelFetcherOptions;
  private readonly log: Logger;

  constructor(opts: ModelFetcherOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ component: 'model-fetcher' });
  }

  /**
   * Fetches `req.url` into `req.dest` and verifies its sha256. Resolves only with a complete,
   * verified file; on any failure `dest` is gone and the error is an EdgeError: MODEL_URL_REFUSED,
   * MODEL_TOO_LARGE, MODEL_DOWNLOAD_FAILED (context.status for HTTP answers), MODEL_HASH_MISMATCH,
   * STORAGE_FAILED or CANCELLED.
   */
  async fetch(req: FetchRequest): Promise<FetchResult> {
    const url = checkModelUrl(req.url, this.opts.allowlist);
    const expected = normalizeSha256(req.sha256);
    const limit = this.limitFor(req.sizeBytes);
    const log = this.log.child({ source: describeUrl(url), sha256: expected });
    if (req.signal?.aborted) throw cancelled();

    const started = performance.now();
    let file: FileHandle | undefined;
    try {
      file = await open(req.dest, 'w').catch((err: unknown) => {
        throw storageFailed(err, 'cannot create the download file');
      });
      const t: Transfer = {
        file,
        hash: createHash('sha256'),
        received: 0,
        validator: undefined,
        resumed: false,
      };
      log.info({ sizeBytes: req.sizeBytes }, 'model download started');
      let attempts = 1;
      if (url.protocol === 'file:') {
        await this.copyFile(url, t, limit, req);
        const actual = t.hash.digest('hex');
        if (actual !== expected) throw hashMismatch(expected, actual, t.received, req.sizeBytes);
      } else {
        attempts = await this.download(url, t, limit, expected, req, log);
      }
      await file.close().catch((err: unknown) => {
        throw storageFailed(err, 'cannot close the download file');
      });
      file = undefined;
      log.info(
        { sizeBytes: t.received, attempts, durationMs: Math.round(performance.now() - started) },
        'model downloaded and verified',
      );
      return { sizeBytes: t.received };
    } catch (err) {
      await file?.close().catch(() => undefined);
      await rm(req.dest, { force: true }).catch((rmErr: unknown) => {
        log.warn({ err: rmErr }, 'cannot delete the partial download');
      });
      if (req.signal?.aborted) throw cancelled(err);
      if (isEdgeError(err)) throw err;
      throw new EdgeError(
        ErrorCodes.MODEL_DOWNLOAD_FAILED,
        'model download failed',
        { reason: reasonOf(err) },
        {
          cause: err,
        },
      );
    }
  }

  private limitFor(sizeBytes: number | undefined): number {
    if (sizeBytes === undefined) return this.opts.maxBytes;
    if (sizeBytes > this.opts.maxBytes) {
      throw new EdgeError(ErrorCodes.MODEL_TOO_LARGE, 'declared model size exceeds MODEL_MAX_BYTES', {
        declared: sizeBytes,
        maxBytes: this.opts.maxBytes,
      });
    }
    return sizeBytes;
  }

  /** Runs attempts until the file hashes right; returns the number of attempts made. */
  private async download(
    url: URL,
    t: Transfer,
    limit: number,
    expected: string,
    req: FetchRequest,
    log: Logger,
  ): Promise<number> {
    const ca = this.opts.ca === undefined ? undefined : [...rootCertificates, this.opts.ca.toString()];
    // One agent per download: nothing stays open between downloads, so the fetcher needs no stop().
    const agent = new Agent({
      connect: { timeout: this.opts.timeoutMs, ...(ca ? { ca } : {}) },
      headersTimeout: this.opts.timeoutMs,
      // The stall watchdog below measures network silence only, not time spent writing to disk.
      bodyTimeout: 0,
    });
    let freshRetryUsed = false;
    try {
      for (let attempt = 0; ; attempt++) {
        let failure: Retry;
        try {
          await this.attempt(agent, url, t, limit, req);
          // copy(): the running hash stays usable should the transfer have to go on.
          const actual = t.hash.copy().digest('hex');
          if (actual === expected) return attempt + 1;
          if (t.resumed && !freshRetryUsed && attempt < this.opts.retries) {
            // Without validators a resumed transfer can splice two versions of a file; one fresh
            // download tells a splice from a wrong sha256 in the twin.
            freshRetryUsed = true;
            log.warn(
              { attempt: attempt + 1 },
              'resumed model download does not hash right; downloading it again',
            );
            await restart(t);
            continue;
          }
          throw hashMismatch(expected, actual, t.received, req.sizeBytes);
        } catch (err) {
          if (req.signal?.aborted) throw cancelled(err);
          if (err instanceof Retry) failure = err;
          else if (isEdgeError(err)) throw err;
          else if (isPermanentNetworkError(err)) {
            throw new EdgeError(
              ErrorCodes.MODEL_DOWNLOAD_FAILED,
              'model server certificate is not trusted',
              { reason: reasonOf(err) },
              { cause: err },
            );
          } else failure = new Retry(reasonOf(err), {}, { cause: err });
        }
        const reason = failure.message;
        if (attempt >= this.opts.retries) {
          throw new EdgeError(
            ErrorCodes.MODEL_DOWNLOAD_FAILED,
            `model download failed after ${attempt + 1} attempts`,
            { attempts: attempt + 1, status: failure.detail.status, reason },
            { cause: failure },
          );
        }
        const delayMs = failure.detail.immediate ? 0 : this.retryDelay(attempt, failure.detail.retryAfterMs);
        log.warn(
          { attempt: attempt + 1, status: failure.detail.status, reason, receivedBytes: t.received, delayMs },
          'model download attempt failed; retrying',
        );
        await sleep(delayMs, undefined, req.signal ? { signal: req.signal } : {});
      }
    } finally {
      await agent.destroy().catch(() => undefined);
    }
  }

  /** One request (following redirects, each checked against the URL policy) and its body. */
  private async attempt(
    agent: Dispatcher,
    url: URL,
    t: Transfer,
    limit: number,
    req: FetchRequest,
  ): Promise<void> {
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let target = url;
      for (let hop = 0; ; hop++) {
        const headers: Record<string, string> = { 'accept-encoding': 'identity' };
        if (t.received > 0) {
          headers.range = `bytes=${t.received}-`;
          if (t.validator !== undefined) headers['if-range'] = t.validator;
        }
        const res = await request(target, { dispatcher: agent, method: 'GET', headers, signal: ac.signal });
        const status = res.statusCode;
        if (status === 200 || status === 206) {
          await this.consume(res, t, limit, ac, req);
          return;
        }
        discard(res.body);
        if ([301, 302, 303, 307, 308].includes(status)) {
          const location = header(res.headers, 'location');
          if (location === undefined || hop >= MAX_REDIRECTS) {
            throw new EdgeError(ErrorCodes.MODEL_DOWNLOAD_FAILED, 'model server redirects without end', {
              status,
            });
          }
          target = checkModelUrl(resolveLocation(location, target), this.opts.allowlist);
          if (target.protocol === 'file:') {
            throw new EdgeError(ErrorCodes.MODEL_URL_REFUSED, 'a redirect may not lead to a file:// URL');
          }
          continue;
        }
        if (status === 416) {
          const total = parseUnsatisfiedRange(header(res.headers, 'content-range'));
          // The previous attempt got every byte but broke before the end of the response.
          if (total !== undefined && total === t.received) return;
          await restart(t);
          throw new Retry('range not satisfiable', { status, immediate: true });
        }
        if (status === 408 || status === 429 || status >= 500) {
          const retryAfterMs = parseRetryAfter(header(res.headers, 'retry-after'));
          throw new Retry(`HTTP ${status}`, {
            status,
            ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
          });
        }
        throw new EdgeError(ErrorCodes.MODEL_DOWNLOAD_FAILED, `model server answered HTTP ${status}`, {
          status,
        });
      }
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Streams a 200 or 206 body into the transfer, enforcing the size limit and the stall timeout. */
  private async consume(
    res: Dispatcher.ResponseData,
    t: Transfer,
    limit: number,
    ac: AbortController,
    req: FetchRequest,
  ): Promise<void> {
    const contentLength = parseLength(header(res.headers, 'content-length'));
    let total: number | undefined;
    if (res.statusCode === 206) {
      const range = parseContentRange(header(res.headers, 'content-range'));
      if (range?.start !== t.received) {
        discard(res.body);
        await restart(t);
        throw new Retry('unusable partial response', { status: 206, immediate: true });
      }
      total = range.total;
      if (t.received > 0) t.resumed = true;
    } else {
      // 200 to a Range request: the server ignores ranges, or If-Range saw a changed file.
      if (t.received > 0) await restart(t);
      total = contentLength;
    }
    total ??= contentLength === undefined ? undefined : t.received + contentLength;
    if (total !== undefined && total > limit) {
      discard(res.body);
      throw tooLarge(limit, req.sizeBytes, this.opts.maxBytes, { announced: total });
    }
    t.validator = validatorOf(res.headers) ?? (t.received > 0 ? t.validator : undefined);
    const progressTotal = req.sizeBytes ?? total;

    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      timer = setTimeout(() => ac.abort(new Stalled()), this.opts.stallTimeoutMs);
    };
    try {
      arm();
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        clearTimeout(timer);
        if (t.received + chunk.length > limit) {
          throw tooLarge(limit, req.sizeBytes, this.opts.maxBytes, { received: t.received + chunk.length });
        }
        await append(t, chunk);
        this.progress(req, t.received, progressTotal);
        arm();
      }
    } catch (err) {
      if (ac.signal.reason instanceof Stalled && !req.signal?.aborted) {
        throw new Retry('stalled', {}, { cause: err });
      }
      throw err;
    } finally {
      clearTimeout(timer);
      discard(res.body);
    }
    if (total !== undefined && t.received < total) throw new Retry('response ended early');
  }

  private async copyFile(url: URL, t: Transfer, limit: number, req: FetchRequest): Promise<void> {
    const path = fileURLToPath(url);
    const info = await stat(path).catch((err: unknown) => {
      throw new EdgeError(ErrorCodes.MODEL_DOWNLOAD_FAILED, 'cannot read the model file', {
        reason: reasonOf(err),
      });
    });
    if (!info.isFile()) {
      throw new EdgeError(ErrorCodes.MODEL_DOWNLOAD_FAILED, 'model URL does not name a regular file');
    }
    if (info.size > limit) throw tooLarge(limit, req.sizeBytes, this.opts.maxBytes, { announced: info.size });
    const stream = createReadStream(path, {
      highWaterMark: FILE_CHUNK_BYTES,
      ...(req.signal ? { signal: req.signal } : {}),
    });
    const total = req.sizeBytes ?? info.size;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (t.received + chunk.length > limit) {
        stream.destroy();
        throw tooLarge(limit, req.sizeBytes, this.opts.maxBytes, { received: t.received + chunk.length });
      }
      await append(t, chunk);
      this.progress(req, t.received, total);
    }
  }

  private progress(req: FetchRequest, bytes: number, total: number | undefined): void {
    if (!req.onProgress) return;
    try {
      req.onProgress(bytes, total);
    } catch (err) {
      this.log.warn({ err }, 'model download progress callback failed');
    }
  }

  private retryDelay(attempt: number, retryAfterMs: number | undefined): number {
    const cap = this.opts.maxRetryDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS;
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, cap);
    const base = Math.min(cap, this.opts.backoffMs * 2 ** attempt);
    // "Equal jitter": spreads the devices of a line that lost the same server, never waits ~0.
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }
}

async function append(t: Transfer, chunk: Buffer): Promise<void> {
  try {
    let written = 0;
    while (written < chunk.length) {
      const { bytesWritten } = await t.file.write(
        chunk,
        written,
        chunk.length - written,
        t.received + written,
      );
      written += bytesWritten;
    }
  } catch (err) {
    throw storageFailed(err, 'cannot write the download file');
  }
  t.hash.update(chunk);
  t.received += chunk.length;
}

async function restart(t: Transfer): Promise<void> {
  try {
    await t.file.truncate(0);
  } catch (err) {
    throw storageFailed(err, 'cannot truncate the download file');
  }
  t.hash = createHash('sha256');
  t.received = 0;
  t.validator = undefined;
  t.resumed = false;
}

/** Drops a body we will not read; undici reports the abort as an 'error' that must not go uncaught. */
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

