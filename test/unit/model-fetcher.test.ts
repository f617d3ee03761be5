import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EdgeError, ErrorCodes, type ErrorCode } from '../../src/errors.js';
import {
  checkModelUrl,
  ModelFetcher,
  parseRetryAfter,
  type ModelFetcherOptions,
} from '../../src/models/fetcher.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { testPki, type TestPki } from '../helpers/test-ca.js';

const MODEL = randomBytes(1024 * 1024 + 123);
const OTHER = randomBytes(MODEL.length);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

async function rejection(p: Promise<unknown>): Promise<EdgeError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(EdgeError);
    return err as EdgeError;
  }
  throw new Error('expected a rejection');
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<EdgeError> {
  const err = await rejection(p);
  expect(err.code).toBe(code);
  return err;
}

let dir: string;
let server: ModelServer;
let logs: Record<string, unknown>[];

function fetcher(overrides: Partial<ModelFetcherOptions> = {}): ModelFetcher {
  const { logger, lines } = capture();
  logs = lines;
  return new ModelFetcher({
    allowlist: [`${server.origin}/`],
    maxBytes: 16 * 1024 * 1024,
    timeoutMs: 2_000,
    stallTimeoutMs: 2_000,
    retries: 3,
    backoffMs: 5,
    logger,
    ...overrides,
  });
}

const retryLogs = (): Record<string, unknown>[] =>
  logs.filter((l) => l.msg === 'model download attempt failed; retrying');

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'model-fetcher-'));
  server = await startModelServer();
});

afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('checkModelUrl', () => {
  const allow = ['http://mirror.local/models/', 'file:///srv/models/', '', '  '];

  it('accepts https always and http/file under an allowlisted prefix', () => {
    expect(checkModelUrl('https://blob.example/m.onnx?sv=x&sig=y', []).protocol).toBe('https:');
    expect(checkModelUrl('HTTPS://Blob.Example/m.onnx', []).host).toBe('blob.example');
    expect(checkModelUrl('http://mirror.local/models/a.onnx', allow).pathname).toBe('/models/a.onnx');
    expect(checkModelUrl('http://MIRROR.local/models/a.onnx', allow).host).toBe('mirror.local');
    expect(checkModelUrl('file:///srv/models/a.onnx', allow).protocol).toBe('file:');
  });

  it.each([
    ['http outside the allowlist', 'http://other.local/models/a.onnx'],
    ['http with no allowlist match by path', 'http://mirror.local/other/a.onnx'],
    ['path traversal out of the prefix', 'http://mirror.local/models/../secret/a.onnx'],
    ['encoded traversal', 'http://mirror.local/models/%2e%2e/secret/a.onnx'],
    ['user info pointing elsewhere', 'http://mirror.local@evil.example/models/a.onnx'],
    ['file outside the allowlist', 'file:///etc/passwd'],
    ['file traversal', 'file:///srv/models/../../etc/passwd'],
    ['file on a remote host', 'file://server/srv/models/a.onnx'],
    ['ftp', 'ftp://mirror.local/models/a.onnx'],
    ['data', 'data:application/octet-stream;base64,AAAA'],
    ['javascript', 'javascript:alert(1)'],
    ['relative', 'models/a.onnx'],
    ['absolute path', '/srv/models/a.onnx'],
    ['malformed', 'http//mirror.local/models/a.onnx'],
    ['empty', ''],
  ])('refuses %s', (_name, url) => {
    try {
      checkModelUrl(url, allow);
      expect.unreachable();
    } catch (err) {
      expect((err as EdgeError).code).toBe(ErrorCodes.MODEL_URL_REFUSED);
    }
  });

  it('never lets an empty allowlist entry admit everything', () => {
    expect(() => checkModelUrl('http://anything.local/a.onnx', [''])).toThrow(EdgeError);
  });

  it('treats an origin-only prefix as ending at the host', () => {
    expect(() => checkModelUrl('http://mirror.local.evil.example/a.onnx', ['http://mirror.local'])).toThrow(
      EdgeError,
    );
    expect(checkModelUrl('http://mirror.local/a.onnx', ['http://mirror.local']).host).toBe('mirror.local');
  });

  it('keeps the query (SAS token) out of the error context', () => {
    try {
      checkModelUrl('ftp://host/m.onnx?sig=SECRET', []);
      expect.unreachable();
    } catch (err) {
      expect(JSON.stringify((err as EdgeError).context)).not.toContain('SECRET');
      expect((err as EdgeError).message).not.toContain('SECRET');
    }
  });
});

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});

describe('ModelFetcher over http', () => {
  it('downloads an allowlisted http URL, verifies it and reports progress', async () => {
    server.serve('/m.onnx', MODEL);
    const dest = path.join(dir, 'dl');
    const progress: [number, number | undefined][] = [];
    const result = await fetcher().fetch({
      url: server.url('/m.onnx'),
      sha256: sha(MODEL).toUpperCase(),
      sizeBytes: MODEL.length,
      dest,
      onProgress: (bytes, total) => progress.push([bytes, total]),
    });
    expect(result.sizeBytes).toBe(MODEL.length);
    expect(sha(await readFile(dest))).toBe(sha(MODEL));
    expect(progress.at(-1)).toEqual([MODEL.length, MODEL.length]);
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]?.range).toBeUndefined();
  });

  it('refuses a URL outside the policy before any I/O', async () => {
    server.serve('/m.onnx', MODEL);
    const dest = path.join(dir, 'dl');
    const f = fetcher({ allowlist: [] });
    await expectCode(
      f.fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest }),
      ErrorCodes.MODEL_URL_REFUSED,
    );
    await expectCode(
      f.fetch({ url: `ftp://127.0.0.1/m.onnx`, sha256: sha(MODEL), dest }),
      ErrorCodes.MODEL_URL_REFUSED,
    );
    expect(server.requests).toHaveLength(0);
    expect(existsSync(dest)).toBe(false);
  });

  it('fails at once on 404 with the status in the context', async () => {
    const dest = path.join(dir, 'dl');
    const err = await expectCode(
      fetcher({ backoffMs: 60_000 }).fetch({ url: server.url('/missing.onnx'), sha256: sha(MODEL), dest }),
      ErrorCodes.MODEL_DOWNLOAD_FAILED,
    );
    expect(err.context.status).toBe(404);
    expect(server.requests).toHaveLength(1);
    expect(existsSync(dest)).toBe(false);
  });

  it('retries a 503 and honours Retry-After up to the cap', async () => {
    server.serve('/m.onnx', MODEL, { status: { code: 503, headers: { 'retry-after': '120' }, times: 1 } });
    const dest = path.join(dir, 'dl');
    await fetcher({ maxRetryDelayMs: 50 }).fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest });
    expect(server.requests.map((r) => r.status)).toEqual([503, 200]);
    expect(retryLogs()).toMatchObject([{ status: 503, delayMs: 50 }]);
    expect(sha(await readFile(dest))).toBe(sha(MODEL));
  });

  it('retries 429 and 408 like 5xx', async () => {
    server.serve('/m.onnx', MODEL, { status: { code: 429, headers: { 'retry-after': '0' }, times: 1 } });
    server.serve('/n.onnx', MODEL, { status: { code: 408, times: 1 } });
    const f = fetcher();
    await f.fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest: path.join(dir, 'a') });
    await f.fetch({ url: server.url('/n.onnx'), sha256: sha(MODEL), dest: path.join(dir, 'b') });
    expect(server.requests.map((r) => r.status)).toEqual([429, 200, 408, 200]);
  });

  it('gives up after the configured retries with MODEL_DOWNLOAD_FAILED', async () => {
    server.serve('/m.onnx', MODEL, { status: { code: 500 } });
    const dest = path.join(dir, 'dl');
    const err = await expectCode(
      fetcher({ retries: 2 }).fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest }),
      ErrorCodes.MODEL_DOWNLOAD_FAILED,
    );
    expect(err.context).toMatchObject({ status: 500, attempts: 3 });
    expect(server.requests).toHaveLength(3);
    expect(existsSync(dest)).toBe(false);
  });

  it('rejects a file that does not hash to sha256 and leaves no file', async () => {
    server.serve('/m.onnx', MODEL);
    const dest = path.join(dir, 'dl');
    const err = await expectCode(
      fetcher().fetch({ url: server.url('/m.onnx'), sha256: sha(OTHER), dest }),
      ErrorCodes.MODEL_HASH_MISMATCH,
    );
    expect(err.context).toMatchObject({ expected: sha(OTHER), actual: sha(MODEL) });
    expect(existsSync(dest)).toBe(false);
    expect(server.requests).toHaveLength(1);
  });

  it('refuses a malformed sha256 before any I/O', async () => {
    server.serve('/m.onnx', MODEL);
    await expectCode(
      fetcher().fetch({ url: server.url('/m.onnx'), sha256: 'abc', dest: path.join(dir, 'dl') }),
      ErrorCodes.DESIRED_INVALID,
    );
    expect(server.requests).toHaveLength(0);
  });

  describe('size limits', () => {
    it('refuses a declared size over maxBytes before any I/O', async () => {
      server.serve('/m.onnx', MODEL);
      await expectCode(
        fetcher({ maxBytes: 1000 }).fetch({
          url: server.url('/m.onnx'),
          sha256: sha(MODEL),
          sizeBytes: 2000,
          dest: path.join(dir, 'dl'),
        }),
        ErrorCodes.MODEL_TOO_LARGE,
      );
      expect(server.requests).toHaveLength(0);
    });

    it('stops at a Content-Length over the declared size', async () => {
      server.serve('/m.onnx', MODEL, { slow: 64 * 1024 });
      const dest = path.join(dir, 'dl');
      const err = await expectCode(
        fetcher().fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), sizeBytes: 1000, dest }),
        ErrorCodes.MODEL_TOO_LARGE,
      );
      expect(err.context).toMatchObject({ limit: 1000, announced: MODEL.length });
      expect(existsSync(dest)).toBe(false);
    });

    it('stops at a Content-Length over maxBytes', async () => {
      server.serve('/m.onnx', MODEL);
      await expectCode(
        fetcher({ maxBytes: 4096 }).fetch({
          url: server.url('/m.onnx'),
          sha256: sha(MODEL),
          dest: path.join(dir, 'dl'),
        }),
        ErrorCodes.MODEL_TOO_LARGE,
      );
    });

    it('stops a body without Content-Length once it streams past the limit', async () => {
      server.serve('/m.onnx', MODEL, { noContentLength: true });
      const dest = path.join(dir, 'dl');
      let seen = 0;
      const err = await expectCode(
        fetcher({ maxBytes: 200_000 }).fetch({
          url: server.url('/m.onnx'),
          sha256: sha(MODEL),
          dest,
          onProgress: (bytes) => (seen = bytes),
        }),
        ErrorCodes.MODEL_TOO_LARGE,
      );
      expect(err.context.limit).toBe(200_000);
      expect(seen).toBeLessThanOrEqual(200_000);
      expect(existsSync(dest)).toBe(false);
    });
  });

  describe('resume', () => {
    it('resumes a broken transfer with Range and If-Range and hashes the whole file', async () => {
      server.serve('/m.onnx', MODEL, { failAfter: { bytes: 300_000, times: 2 } });
      const dest = path.join(dir, 'dl');
      const res = await fetcher().fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest });
      expect(res.sizeBytes).toBe(MODEL.length);
      expect(sha(await readFile(dest))).toBe(sha(MODEL));
      const [first, second, third] = server.requests;
      expect(first).toMatchObject({ range: undefined, status: 200 });
      expect(second?.range).toMatch(/^bytes=[1-9]\d*-$/);
      expect(second?.ifRange).toMatch(/^"/);
      expect(second?.status).toBe(206);
      expect(third?.status).toBe(206);
      const start = (r: typeof second): number => Number(/=(\d+)-/.exec(r?.range ?? '')?.[1]);
      expect(start(third)).toBeGreaterThan(start(second));
    });

    it('starts over when the server ignores Range', async () => {
      server.serve('/m.onnx', MODEL, { noRange: true, failAfter: { bytes: 300_000, times: 1 } });
      const dest = path.join(dir, 'dl');
      await fetcher().fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest });
      expect(server.requests).toHaveLength(2);
      expect(server.requests[1]).toMatchObject({ status: 200 });
      expect(server.requests[1]?.range).toMatch(/^bytes=/);
      expect(sha(await readFile(dest))).toBe(sha(MODEL));
    });

    it('starts over when If-Range shows the file changed', async () => {
      server.serve('/m.onnx', OTHER, { failAfter: { bytes: 300_000, times: 1 } });
      const dest = path.join(dir, 'dl');
      let swapped = false;
      await fetcher().fetch({
        url: server.url('/m.onnx'),
        sha256: sha(MODEL),
        dest,
        onProgress: () => {
          if (!swapped) server.replace('/m.onnx', MODEL);
          swapped = true;
        },
      });
      expect(server.requests.map((r) => r.status)).toEqual([200, 200]);
      expect(sha(await readFile(dest))).toBe(sha(MODEL));
    });

    it('downloads afresh once when a resume without validators spliced two versions', async () => {
      server.serve('/m.onnx', OTHER, { validators: false, failAfter: { bytes: 300_000, times: 1 } });
      const dest = path.join(dir, 'dl');
      let swapped = false;
      await fetcher().fetch({
        url: server.url('/m.onnx'),
        sha256: sha(MODEL),
        dest,
        onProgress: () => {
          if (!swapped) server.replace('/m.onnx', MODEL);
          swapped = true;
        },
      });
      expect(server.requests.map((r) => r.status)).toEqual([200, 206, 200]);
      expect(server.requests[2]?.range).toBeUndefined();
      expect(sha(await readFile(dest))).toBe(sha(MODEL));
    });

    it('retries a stalled transfer and resumes it', async () => {
      server.serve('/m.onnx', MODEL, { stallAfter: { bytes: 100_000, times: 1 } });
      const dest = path.join(dir, 'dl');
      await fetcher({ stallTimeoutMs: 200 }).fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest });
      expect(retryLogs()).toMatchObject([{ reason: 'stalled', receivedBytes: 100_000 }]);
      expect(server.requests[1]).toMatchObject({ range: 'bytes=100000-', status: 206 });
      expect(sha(await readFile(dest))).toBe(sha(MODEL));
    });

    it('retries when the response headers never come', async () => {
      server.serve('/m.onnx', MODEL, { hang: { times: 1 } });
      const dest = path.join(dir, 'dl');
      await fetcher({ timeoutMs: 200 }).fetch({ url: server.url('/m.onnx'), sha256: sha(MODEL), dest });
      expect(retryLogs()).toMatchObject([{ reason: 'UND_ERR_HEADERS_TIMEOUT' }]);
      expect(server.requests).toHaveLength(2);
    });
  });

  describe('redirects', () => {
    it('follows a redirect that passes the URL policy', async () => {
      server.serve('/m.onnx', MODEL);
      server.serve('/old.onnx', MODEL, { status: { code: 302, headers: { location: '/m.onnx' } } });
      const dest = path.join(dir, 'dl');
      await fetcher().fetch({ url: server.url('/old.onnx'), sha256: sha(MODEL), dest });
      expect(server.requests.map((r) => r.path)).toEqual(['/old.onnx', '/m.onnx']);
    });

    it('refuses a redirect to a URL outside the policy', async () => {
      server.serve('/old.onnx', MODEL, {
        status: { code: 302, headers: { location: 'ftp://127.0.0.1/m.onnx' } },
      });
      const dest = path.join(dir, 'dl');
      await expectCode(
        fetcher().fetch({ url: server.url('/old.onnx'), sha256: sha(MODEL), dest }),
        ErrorCodes.MODEL_URL_REFUSED,
      );
      expect(existsSync(dest)).toBe(false);
    });
  });

  describe('cancellation', () => {
    it('aborts a transfer at once with CANCELLED and deletes the partial file', async () => {
      server.serve('/m.onnx', MODEL, { slow: 64 * 1024 });
      const dest = path.join(dir, 'dl');
      const ac = new AbortController();
      let sawBytes = false;
      const err = await expectCode(
        fetcher().fetch({
          url: server.url('/m.onnx'),
          sha256: sha(MODEL),
          dest,
          signal: ac.signal,
          onProgress: () => {
            sawBytes = true;
            ac.abort();
          },
        }),
        ErrorCodes.CANCELLED,
      );
      expect(err.code).toBe(ErrorCodes.CANCELLED);
      expect(sawBytes).toBe(true);
      expect(existsSync(dest)).toBe(false);
      expect(server.requests).toHaveLength(1);
    });

    it('aborts during the backoff between attempts', async () => {
      server.serve('/m.onnx', MODEL, { status: { code: 503 } });
      const dest = path.join(dir, 'dl');
      const ac = new AbortController();
      const p = fetcher({ backoffMs: 60_000 }).fetch({
        url: server.url('/m.onnx'),
        sha256: sha(MODEL),
        dest,
        signal: ac.signal,
      });
      await expect.poll(() => retryLogs().length).toBe(1);
      ac.abort();
      await expectCode(p, ErrorCodes.CANCELLED);
      expect(existsSync(dest)).toBe(false);
    });

    it('does nothing for an already aborted signal', async () => {
      server.serve('/m.onnx', MODEL);
      const dest = path.join(dir, 'dl');
      await expectCode(
        fetcher().fetch({
          url: server.url('/m.onnx'),
          sha256: sha(MODEL),
          dest,
          signal: AbortSignal.abort(),
        }),
        ErrorCodes.CANCELLED,
      );
      expect(server.requests).toHaveLength(0);
      expect(existsSync(dest)).toBe(false);
    });
  });
});

describe('ModelFetcher over https', () => {
  let tls: ModelServer;
  let pki: TestPki;

  beforeAll(async () => {
    pki = await testPki();
    tls = await startModelServer({ https: { key: pki.serverKey, cert: pki.serverCert } });
    tls.serve('/m.onnx', MODEL);
  });

  afterAll(async () => {
    await tls.close();
  });

  it('downloads with the configured CA', async () => {
    const dest = path.join(dir, 'dl');
    await fetcher({ ca: pki.caCert, allowlist: [] }).fetch({
      url: tls.url('/m.onnx'),
      sha256: sha(MODEL),
      dest,
    });
    expect(sha(await readFile(dest))).toBe(sha(MODEL));
  });

  it.each([
    ['no extra CA', undefined],
    ['another CA', 'other'],
  ])('fails at once, without retrying, when the certificate is not trusted (%s)', async (_name, which) => {
    const dest = path.join(dir, 'dl');
    const ca = which === 'other' ? { ca: pki.otherCaCert } : {};
    const err = await expectCode(
      fetcher({ backoffMs: 60_000, ...ca }).fetch({ url: tls.url('/m.onnx'), sha256: sha(MODEL), dest }),
      ErrorCodes.MODEL_DOWNLOAD_FAILED,
    );
    expect(String(err.context.reason)).toMatch(/CERT|UNABLE_TO/);
    expect(retryLogs()).toHaveLength(0);
    expect(existsSync(dest)).toBe(false);
  });

  it('refuses a redirect from https to a plain http URL that is not allowlisted', async () => {
    tls.serve('/old.onnx', MODEL, { status: { code: 301, headers: { location: server.url('/m.onnx') } } });
    server.serve('/m.onnx', MODEL);
    await expectCode(
      fetcher({ ca: pki.caCert, allowlist: [] }).fetch({
        url: tls.url('/old.onnx'),
        sha256: sha(MODEL),
        dest: path.join(dir, 'dl'),
      }),
      ErrorCodes.MODEL_URL_REFUSED,
    );
    expect(server.requests).toHaveLength(0);
  });
});

describe('ModelFetcher over file://', () => {
  it('copies an allowlisted file and verifies it', async () => {
    const src = path.join(dir, 'models', 'm.onnx');
    await mkdir(path.dirname(src));
    await writeFile(src, MODEL);
    const dest = path.join(dir, 'dl');
    const prefix = `${pathToFileURL(path.join(dir, 'models')).href}/`;
    const res = await fetcher({ allowlist: [prefix] }).fetch({
      url: pathToFileURL(src).href,
      sha256: sha(MODEL),
      dest,
    });
    expect(res.sizeBytes).toBe(MODEL.length);
    expect(sha(await readFile(dest))).toBe(sha(MODEL));

    await expectCode(
      fetcher({ allowlist: [prefix] }).fetch({ url: pathToFileURL(src).href, sha256: sha(OTHER), dest }),
      ErrorCodes.MODEL_HASH_MISMATCH,
    );
    expect(existsSync(dest)).toBe(false);
    await expectCode(
      fetcher({ allowlist: [prefix], maxBytes: 1000 }).fetch({
        url: pathToFileURL(src).href,
        sha256: sha(MODEL),
        dest,
      }),
      ErrorCodes.MODEL_TOO_LARGE,
    );
    await expectCode(
      fetcher({ allowlist: [prefix] }).fetch({
        url: pathToFileURL(path.join(dir, 'models', 'none.onnx')).href,
        sha256: sha(MODEL),
        dest,
      }),
      ErrorCodes.MODEL_DOWNLOAD_FAILED,
    );
  });

  it('refuses a file URL outside the allowlist', async () => {
    const src = path.join(dir, 'm.onnx');
    await writeFile(src, MODEL);
    await expectCode(
      fetcher({ allowlist: [] }).fetch({
        url: pathToFileURL(src).href,
        sha256: sha(MODEL),
        dest: path.join(dir, 'dl'),
      }),
      ErrorCodes.MODEL_URL_REFUSED,
    );
  });
});
