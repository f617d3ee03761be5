import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { isEdgeError } from '../../src/errors.js';
import { bearerGuard } from '../../src/http/auth.js';
import { createLogger } from '../../src/logger.js';
import { defaultTestModel, startDaemon, testConfig, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame, solidFrame, svgFrame } from '../helpers/frames.js';
import { postFrame, rawExchange, request, type Answer } from '../helpers/http.js';
import { versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { buildSlowModel, corruptModel, writeModelDir } from '../helpers/onnx-builder.js';
import { GraphBuilder } from '../helpers/onnx-graph.js';
import { patchPngIhdr } from '../fuzz/frame-fuzzer.js';

/**
 * The security review of the daemon's surface, asserted: loopback by default, the bearer token
 * compared in constant time, secrets kept out of the logs (with the production logger), model
 * files named by hash only, request and header limits, and no internals in any error answer.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TOKEN = 'fz-api-token-7d1f0c93a5e2b84';
const MODULE_KEY = Buffer.from('fz-secret-module-key-0123456789abcdef').toString('base64');
const SAS_SIG = 'SECRETSIG';
/** Stack frames, source paths, native source locations: none of it belongs in an answer. */
const INTERNALS =
  /\n\s+at\s|\bat\s+\S+\s+\(?\S+:\d+:\d+\)?|node_modules|\/src\/|\.(ts|js|cc|cpp|h):\d+|onnxruntime_src|file:\/\//;

const frame = await encodeFrame(gradientFrame(32, 32), 32, 32, 3, 'png');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function daemon(opts: Parameters<typeof startDaemon>[0] = {}): Promise<Daemon> {
  const d = await startDaemon(opts);
  cleanups.push(() => d.stop());
  return d;
}

/** The error contract and nothing internal. */
function expectCleanError(a: Answer, status: number, code: string): void {
  expect({ status: a.status, body: a.json }).toEqual({
    status,
    body: { error: { code, message: expect.any(String) as string } },
  });
  expect(a.text).not.toMatch(INTERNALS);
}

function answerOf(raw: { status: number; headers: Record<string, string>; body: string }): Answer {
  let json: unknown;
  try {
    json = JSON.parse(raw.body);
  } catch {
    json = undefined;
  }
  return { status: raw.status, headers: new Headers(raw.headers), text: raw.body, json };
}

describe('network exposure', () => {
  it('binds 127.0.0.1 unless HOST says otherwise', () => {
    expect(loadConfig({}).host).toBe('127.0.0.1');
  });

  it('an empty HOST (HOST= left blank in a template) still means loopback; empty limits keep their defaults', () => {
    // An empty variable counts as unset; the default must then apply, not `undefined` (which
    // makes listen() bind every interface and turns the pixel-limit checks into no-ops).
    const c = loadConfig({ HOST: '', MAX_FRAME_PIXELS: '', BODY_LIMIT_BYTES: '', REQUEST_TIMEOUT_MS: '' });
    expect({
      host: c.host,
      maxFramePixels: c.maxFramePixels,
      bodyLimitBytes: c.bodyLimitBytes,
      requestTimeoutMs: c.requestTimeoutMs,
    }).toEqual({
      host: '127.0.0.1',
      maxFramePixels: 100_000_000,
      bodyLimitBytes: 64 * 1024 * 1024,
      requestTimeoutMs: 30_000,
    });
  });
});

describe('bearer token', () => {
  it('is compared in constant time: sha256 digests of both sides through timingSafeEqual', async () => {
    const source = await readFile(path.join(ROOT, 'src/http/auth.ts'), 'utf8');
    expect(source).toMatch(/import\s*\{[^}]*\btimingSafeEqual\b[^}]*\}\s*from\s*'node:crypto'/);
    expect(source).toMatch(/createHash\('sha256'\)/);
    // Both sides hashed to the same length before the comparison; no plain string comparison.
    expect(source).toMatch(/timingSafeEqual\(\s*digest\([^)]*\)\s*,\s*expected\s*\)/);
    expect(source).toMatch(/const expected = digest\(token\)/);
    expect(source).not.toMatch(/(presented|token|auth)\s*[!=]==?\s*(presented|token|expected)/);
  });

  it('refuses tokens of any length without throwing anything but UNAUTHORIZED', async () => {
    const guard = bearerGuard(TOKEN);
    const check = (authorization: string): Promise<unknown> =>
      guard.call({} as FastifyInstance, { headers: { authorization } } as FastifyRequest, {} as FastifyReply);
    const wrong = [
      '',
      'x',
      TOKEN.slice(0, -1),
      `${TOKEN}x`,
      TOKEN.toUpperCase(),
      'y'.repeat(100_000),
      '\u0000',
    ];
    for (const t of wrong) {
      for (const header of [`Bearer ${t}`, t, `bearer ${TOKEN}`, `Basic ${t}`]) {
        const err = await check(header).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isEdgeError(err) && err.code, header.slice(0, 40)).toBe('EDGE_ERR_UNAUTHORIZED');
      }
    }
    await expect(check(`Bearer ${TOKEN}`)).resolves.toBeUndefined();
  });

  it('answers 401 to wrong tokens of very different lengths, 200 to the right one', async () => {
    const d = await daemon({ env: { API_TOKEN: TOKEN } });
    for (const auth of [
      undefined,
      'Bearer a',
      `Bearer ${'z'.repeat(8000)}`,
      `Bearer ${TOKEN} `,
      `Bearer ${TOKEN}x`,
    ]) {
      const a = await postFrame(`${d.url}/v1/score`, frame, 'image/png', auth ? { authorization: auth } : {});
      // `Bearer <token> ` (trailing space) is the token: the header value is trimmed.
      if (auth === `Bearer ${TOKEN} `) expect(a.status).toBe(200);
      else expectCleanError(a, 401, 'EDGE_ERR_UNAUTHORIZED');
    }
    const ok = await postFrame(`${d.url}/v1/score`, frame, 'image/png', { authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
  });
});

describe('secrets in logs (production logger)', () => {
  let server: ModelServer;

  /** createApp with src/logger.ts's logger (the redaction config main.ts uses) capturing every line. */
  async function startLogged(
    env: Record<string, string>,
  ): Promise<{ app: App; url: string; dir: string; lines: string[] }> {
    const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-security-'));
    const m = defaultTestModel();
    const { modelPath } = await writeModelDir(path.join(dir, 'model'), m.model, m.manifest);
    const config = testConfig(dir, modelPath, { LOG_LEVEL: 'trace', ...env });
    const lines: string[] = [];
    const app = createApp(config, createLogger(config, { write: (s: string) => void lines.push(s) }));
    await app.start();
    cleanups.push(async () => {
      await app.stop();
      await rm(dir, { recursive: true, force: true });
    });
    return { app, url: `http://127.0.0.1:${app.address!.port}`, dir, lines };
  }

  it('never logs the API token, the module key, or a SAS signature; model files are named by hash', async () => {
    server = await startModelServer();
    cleanups.push(() => server.close());
    const m = versionedModel('fzsec7');
    const name = 'fzsec-name';
    server.serve('/models/fzsec.onnx', m.bytes);
    const sas = `?sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=${SAS_SIG}`;
    const probe = path.join(
      await mkdtemp(path.join(tmpdir(), 'edge-scorer-security-desired-')),
      'desired.json',
    );
    cleanups.push(() => rm(path.dirname(probe), { recursive: true, force: true }));
    const desired = (model: Record<string, unknown>): Promise<void> =>
      writeFile(probe, JSON.stringify({ model: { ...m.manifest, name, ...model } }));
    await desired({ url: server.url(`/models/fzsec.onnx${sas}`), sha256: m.sha256 });
    const connectionString =
      `HostName=127.0.0.1;DeviceId=fz-device;ModuleId=fz-module;SharedAccessKey=${MODULE_KEY};` +
      'GatewayHostName=127.0.0.1:1';
    const d = await startLogged({
      API_TOKEN: TOKEN,
      IOTHUB_CONNECTION_STRING: connectionString,
      IOTHUB_BACKOFF_MAX_MS: '200',
      TWIN_TIMEOUT_MS: '500',
      DESIRED_PROPERTIES_FILE: probe,
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      MODEL_DOWNLOAD_TIMEOUT_MS: '2000',
    });
    expect(d.app.config.twinMode).toBe('connection-string');

    // Wrong and right tokens, in the header and where a careless client might put them.
    for (const auth of ['Bearer wrong-token', `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, `Bearer ${TOKEN}`]) {
      await postFrame(`${d.url}/v1/score`, frame, 'image/png', { authorization: auth });
    }
    await postFrame(`${d.url}/v1/score?token=${TOKEN}`, frame, 'image/png', { 'x-frame-id': TOKEN });

    // The SAS download succeeds; then a 404, a hash mismatch and a refused URL, all with signatures.
    await waitFor(
      async () =>
        ((await request(`${d.url}/v1/model`)).json as { model?: { manifest?: { version?: string } } }).model
          ?.manifest?.version === 'fzsec7' || undefined,
      'the SAS-URL model to become active',
      20_000,
    );
    const failWith = async (model: Record<string, unknown>, code: string): Promise<void> => {
      await desired(model);
      await waitFor(() => d.app.manager.status.lastError?.code === code || undefined, code, 20_000);
    };
    const other = versionedModel('fzsec8');
    await failWith(
      { url: server.url(`/missing.onnx${sas}2`), sha256: other.sha256 },
      'EDGE_ERR_MODEL_DOWNLOAD_FAILED',
    );
    server.serve('/wrong.onnx', m.bytes);
    await failWith(
      { url: server.url(`/wrong.onnx${sas}3`), sha256: other.sha256 },
      'EDGE_ERR_MODEL_HASH_MISMATCH',
    );
    await failWith(
      { url: `http://127.0.0.1:1/refused.onnx${sas}4`, sha256: other.sha256 },
      'EDGE_ERR_MODEL_URL_REFUSED',
    );
    // Give the IoT Hub client time to fail a few connects with the key.
    await waitFor(
      () => (d.lines.filter((l) => l.includes('"component":"iothub"')).length >= 2 ? true : undefined),
      'iothub connect attempts',
      10_000,
    ).catch(() => undefined);
    await d.app.stop();

    const log = d.lines.join('');
    expect(log.length).toBeGreaterThan(0);
    expect(log).toContain('"component":"model"');
    for (const secret of [TOKEN, MODULE_KEY, SAS_SIG, 'sig%3D', 'SharedAccessSignature ']) {
      const at = log.indexOf(secret);
      expect(at, `"${secret}" in the log: …${log.slice(Math.max(0, at - 300), at + 100)}…`).toBe(-1);
    }
    // The IoT Hub client did try (and fail) to connect with the key.
    expect(log).toContain('"component":"iothub"');

    // Model files: models/<64-hex>/model.onnx|model.json only; no name or version in any path.
    const all: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        all.push(path.relative(d.app.config.dataDir, p));
        if (e.isDirectory()) await walk(p);
      }
    };
    await walk(d.app.config.dataDir);
    const models = all.filter((p) => p.startsWith('models'));
    expect(models.length).toBeGreaterThan(0);
    for (const p of models) expect(p).toMatch(/^models(\/[0-9a-f]{64}(\/(model\.onnx|model\.json))?)?$/);
    expect(models).toContain(`models/${m.sha256}/model.onnx`);
    for (const p of all) expect(p).not.toMatch(/fzsec|\.\./);
  }, 90_000);

  it("a malformed request's raw packet (logged at trace) does not carry the token", async () => {
    const d = await startLogged({ API_TOKEN: TOKEN });
    await rawExchange(
      d.url,
      `POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nX-Bad\r\n\r\n`,
    );
    await d.app.stop();
    const log = d.lines.join('');
    expect(log).not.toContain(TOKEN);
    // fastify's default clientErrorHandler logs {err} at trace; node's parse error carries the
    // request bytes as err.rawPacket, serialised as {"type":"Buffer","data":[…]}.
    const tokenBytes = [...Buffer.from(TOKEN)].join(',');
    const at = log.indexOf(tokenBytes);
    expect(at, `the token's bytes in: ${log.slice(Math.max(0, at - 200), at + 60)}`).toBe(-1);
  });
});

describe('request limits', () => {
  it('a 100 KB header → 431 (or 400), and the daemon goes on', async () => {
    const d = await daemon();
    const head = `GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'b'.repeat(100 * 1024)}\r\n\r\n`;
    const a = await rawExchange(d.url, head);
    expect([400, 431]).toContain(a.status);
    expect(a.body).not.toMatch(INTERNALS);
    expect((await postFrame(`${d.url}/v1/score`, frame, 'image/png')).status).toBe(200);
  });

  it('socket-level refusals (header overflow, malformed request) use the documented error shape', async () => {
    const d = await daemon();
    const overflow = await rawExchange(
      d.url,
      `GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'b'.repeat(100 * 1024)}\r\n\r\n`,
    );
    const malformed = await rawExchange(d.url, 'GARBAGE\r\n\r\n');
    // README: errors are {"error":{"code":"EDGE_ERR_…","message":"…"}}; these come from fastify's
    // default clientErrorHandler instead ({"error":"Bad Request","message":"Client Error",…}).
    expectCleanError(answerOf(overflow), overflow.status, 'EDGE_ERR_BAD_REQUEST');
    expectCleanError(answerOf(malformed), 400, 'EDGE_ERR_BAD_REQUEST');
  });

  it('a body over BODY_LIMIT_BYTES → 413 EDGE_ERR_BODY_TOO_LARGE', async () => {
    const d = await daemon({ env: { BODY_LIMIT_BYTES: '65536' } });
    const a = await postFrame(`${d.url}/v1/score`, Buffer.alloc(65537, 1), 'image/png');
    expectCleanError(a, 413, 'EDGE_ERR_BODY_TOO_LARGE');
  });

  it('REQUEST_TIMEOUT_MS bounds receiving a request, not scoring it: queued frames get an answer', async () => {
    // ~200 ms per inference, one at a time: the tenth frame waits ~2 s, twice REQUEST_TIMEOUT_MS.
    const d = await daemon({
      model: buildSlowModel({ batch: 1 }),
      manifest: {
        name: 'slow',
        version: '1',
        task: 'classification',
        labels: ['ok', 'bridge'],
        input: { width: 128, height: 128, scale: 1 / 255 },
        output: { format: 'probabilities' },
      },
      env: { REQUEST_TIMEOUT_MS: '1000', MAX_BATCH_SIZE: '1' },
    });
    const answers = await Promise.all(
      Array.from({ length: 10 }, () =>
        postFrame(`${d.url}/v1/score`, frame, 'image/png').then(
          (a) => String(a.status),
          (err: Error) => `no answer (${(err.cause as Error | undefined)?.message ?? err.message})`,
        ),
      ),
    );
    // Connections of admitted frames are destroyed after REQUEST_TIMEOUT_MS of silence
    // (fastify connectionTimeout = REQUEST_TIMEOUT_MS in src/http/server.ts).
    expect(answers.filter((a) => !/^(200|429)$/.test(a))).toEqual([]);
  });
});

/** A classifier that passes warm-up (blank frames) and fails at run time on bright frames. */
function modelFailingOnBrightFrames(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('input', 'float32', ['N', 3, 32, 32]);
  const means = g.node('ReduceMean', [x], { axes: [2, 3], keepdims: 0 });
  const logits = g.node('Gemm', [
    means,
    g.init('W', [3, 3], [0, 1, 2, 0, 1, 2, 0, 1, 2]),
    g.init('b', [3], [0, 0, 0]),
  ]);
  // index = int64(max(x) · 10): 0 for blank frames, out of the 3-entry table for bright ones.
  const index = g.node(
    'Cast',
    [g.node('Mul', [g.node('ReduceMax', [x], { keepdims: 0 }), g.scalar('ten', 10)])],
    {
      to: 7,
    },
  );
  const picked = g.node('Gather', [g.init('table', [3], [0, 0, 0]), index], { axis: 0 });
  g.node('Add', [logits, picked], {}, 'output');
  g.output('output', 'float32', ['N', 3]);
  return g.build();
}

describe('no internals in error answers', () => {
  it('every error path a client can reach answers code and message only', async () => {
    const d = await daemon({
      env: { API_TOKEN: TOKEN, BODY_LIMIT_BYTES: '65536', MAX_FRAME_PIXELS: '1000000' },
    });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const post = (body: Uint8Array, type: string | null, h: Record<string, string> = {}): Promise<Answer> =>
      postFrame(`${d.url}/v1/score`, body, type, { ...auth, ...h });
    const bomb = patchPngIhdr(frame, 5000, 5000, true);
    const cases: [string, () => Promise<Answer>, number, string][] = [
      [
        'undecodable',
        () => post(Buffer.from('not an image'), 'image/jpeg'),
        400,
        'EDGE_ERR_FRAME_UNDECODABLE',
      ],
      [
        'raw headers',
        () => post(Buffer.alloc(12), 'application/octet-stream'),
        400,
        'EDGE_ERR_RAW_HEADERS_INVALID',
      ],
      ['bad frame id', () => post(frame, 'image/png', { 'x-frame-id': 'a b' }), 400, 'EDGE_ERR_BAD_REQUEST'],
      ['no token', () => postFrame(`${d.url}/v1/score`, frame, 'image/png'), 401, 'EDGE_ERR_UNAUTHORIZED'],
      // The URL parser folds the dot segments (to /v1/etc/passwd); more of them would reach `/`,
      // which is the operator console's page.
      ['no route', () => request(`${d.url}/v1/nope/%2e%2e/etc/passwd`), 404, 'EDGE_ERR_NOT_FOUND'],
      ['body too large', () => post(Buffer.alloc(70_000), 'image/png'), 413, 'EDGE_ERR_BODY_TOO_LARGE'],
      ['frame too large', () => post(bomb, 'image/png'), 413, 'EDGE_ERR_FRAME_TOO_LARGE'],
      ['svg', () => post(svgFrame(), 'image/png'), 415, 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE'],
      ['media type', () => post(frame, 'text/plain'), 415, 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE'],
      [
        'raw size',
        () =>
          post(Buffer.alloc(10), 'application/octet-stream', {
            'x-frame-format': 'rgb8',
            'x-frame-width': '2',
            'x-frame-height': '2',
          }),
        422,
        'EDGE_ERR_RAW_SIZE_MISMATCH',
      ],
    ];
    for (const [what, send, status, code] of cases) {
      const a = await send();
      expect.soft(a.status, what).toBe(status);
      expectCleanError(a, status, code);
    }
  });

  it('429 (queue full) and 503 (no model) carry no internals', async () => {
    const slow = await daemon({
      model: buildSlowModel({ batch: 1 }),
      manifest: {
        name: 'slow',
        version: '1',
        task: 'classification',
        labels: ['ok', 'bridge'],
        input: { width: 128, height: 128, scale: 1 / 255 },
        output: { format: 'probabilities' },
      },
      env: { MAX_QUEUE: '1', MAX_BATCH_SIZE: '1' },
    });
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => postFrame(`${slow.url}/v1/score`, frame, 'image/png')),
    );
    const full = answers.find((a) => a.status === 429);
    expect(full, answers.map((a) => a.status).join(',')).toBeDefined();
    expectCleanError(full!, 429, 'EDGE_ERR_QUEUE_FULL');
    expect(full!.headers.get('retry-after')).toMatch(/^\d+$/);

    const broken = await daemon({
      model: corruptModel(defaultTestModel().model),
      manifest: defaultTestModel().manifest,
    });
    expectCleanError(
      await postFrame(`${broken.url}/v1/score`, frame, 'image/png'),
      503,
      'EDGE_ERR_NOT_READY',
    );
    const model = await request(`${broken.url}/v1/model`);
    expect(model.text).not.toMatch(INTERNALS);
  });

  it('a forced 500 (inference fails at run time) answers its code and nothing internal', async () => {
    const d = await daemon({
      model: modelFailingOnBrightFrames(),
      manifest: {
        name: 'fails-bright',
        version: '1',
        task: 'classification',
        labels: ['ok', 'bridge', 'missing'],
        input: { width: 32, height: 32, scale: 1 / 255 },
        output: { format: 'logits', topK: 3 },
      },
    });
    const dark = await encodeFrame(solidFrame(32, 32, 3, 0), 32, 32, 3, 'png');
    const bright = await encodeFrame(solidFrame(32, 32, 3, 200), 32, 32, 3, 'png');
    expect((await postFrame(`${d.url}/v1/score`, dark, 'image/png')).status).toBe(200);
    const a = await postFrame(`${d.url}/v1/score`, bright, 'image/png');
    expect(a.status).toBe(500);
    expect(a.json).toEqual({
      error: {
        code: 'EDGE_ERR_INFERENCE_FAILED',
        message: 'inference failed for this frame',
      },
    });
    expect(a.text).not.toMatch(INTERNALS);
    expect(a.text).not.toMatch(/Gather|onnxruntime|indices/i);
    // The daemon keeps serving.
    expect((await postFrame(`${d.url}/v1/score`, dark, 'image/png')).status).toBe(200);
  });
});
