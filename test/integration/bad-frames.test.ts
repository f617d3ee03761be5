import { createHash } from 'node:crypto';
import http from 'node:http';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, TEST_LABELS, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame, pngBomb, svgFrame } from '../helpers/frames.js';
import { metricValue, postFrame, rawExchange, request, scrape, type Answer } from '../helpers/http.js';

/**
 * Every bad frame gets its documented 4xx with the error shape of the README's "HTTP interface", is counted in
 * /metrics under its code, and leaves the daemon scoring the next good frame.
 */

const REQUESTS = 'edge_scorer_http_requests_total';
const SCORE_ROUTE = '/v1/score';

let daemon: Daemon | undefined;

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

async function start(env: Record<string, string> = {}): Promise<Daemon> {
  daemon = await startDaemon({ env });
  return daemon;
}

const goodFrame = (): Promise<Buffer> => encodeFrame(gradientFrame(64, 48), 64, 48, 3, 'png');

/** Deterministic noise (SHAKE-256 output), so that PNG cannot compress it below a chosen size. */
function noise(width: number, height: number, seed = 'frame'): Buffer {
  return createHash('shake256', { outputLength: width * height * 3 })
    .update(seed)
    .digest();
}

/** The error shape, the status, the code, and nothing internal (no stack frames, no file paths). */
function expectError(answer: Answer, status: number, code: string): void {
  expect({ status: answer.status, body: answer.json }).toEqual({
    status,
    body: { error: { code, message: expect.any(String) as string } },
  });
  expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
  const { message } = (answer.json as { error: { message: string } }).error;
  expect(message.length).toBeGreaterThan(0);
  expect(answer.text).not.toMatch(/\bat\s+\S+.*:\d+:\d+/);
  expect(answer.text).not.toMatch(/node_modules|\.ts\b|\/src\//);
}

/** An answer read off a raw socket or node:http, in the shape fetch answers have. */
function asAnswer(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  text: string,
): Answer {
  const h = new Headers();
  for (const [k, v] of Object.entries(headers)) if (typeof v === 'string') h.set(k, v);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status, headers: h, text, json };
}

/** The next good frame is scored as if nothing happened. */
async function expectStillScores(url: string): Promise<void> {
  const answer = await postFrame(`${url}/v1/score`, await goodFrame(), 'image/png', {
    'x-frame-id': 'good-1',
  });
  expect(answer.status).toBe(200);
  const body = answer.json as { frameId: string; classification: { label: string; score: number }[] };
  expect(body.frameId).toBe('good-1');
  expect(body.classification).toHaveLength(3);
  expect(TEST_LABELS).toContain(body.classification[0]!.label);
}

/** /metrics counts exactly `count` answers with `code` on /v1/score, and the one good frame. */
async function expectCounted(url: string, code: string, count: number): Promise<void> {
  const samples = await scrape(url);
  expect(metricValue(samples, REQUESTS, { route: SCORE_ROUTE, outcome: code })).toBe(count);
  expect(metricValue(samples, REQUESTS, { route: SCORE_ROUTE, outcome: '2xx' })).toBe(1);
}

type Send = (url: string) => Promise<Answer>;
interface Case {
  name: string;
  status: number;
  code: string;
  /** Each sends one bad request; all must get the same answer. */
  send: Send[];
}

const score =
  (
    body: () => Uint8Array | Promise<Uint8Array>,
    contentType: string | null,
    headers?: Record<string, string>,
  ) =>
  async (url: string): Promise<Answer> =>
    postFrame(`${url}/v1/score`, await body(), contentType, headers);

const raw = (headers: Record<string, string>, body = Buffer.alloc(8 * 6 * 3)): Send =>
  score(() => body, 'application/octet-stream', headers);

const gif = (): Promise<Buffer> =>
  sharp(gradientFrame(16, 16), { raw: { width: 16, height: 16, channels: 3 } })
    .gif()
    .toBuffer();

const jpeg = (): Promise<Buffer> => encodeFrame(noise(256, 192), 256, 192, 3, 'jpeg', { quality: 90 });

const cases: Case[] = [
  {
    name: 'empty body',
    status: 400,
    code: 'EDGE_ERR_FRAME_UNDECODABLE',
    send: [score(() => Buffer.alloc(0), 'image/jpeg'), score(() => Buffer.alloc(0), 'image/png')],
  },
  {
    name: 'truncated JPEG (first half of a valid one)',
    status: 400,
    code: 'EDGE_ERR_FRAME_UNDECODABLE',
    send: [
      score(async () => {
        const full = await jpeg();
        return full.subarray(0, Math.floor(full.length / 2));
      }, 'image/jpeg'),
    ],
  },
  {
    name: 'random bytes as image/jpeg',
    status: 400,
    code: 'EDGE_ERR_FRAME_UNDECODABLE',
    send: [score(() => noise(64, 64).subarray(0, 4096), 'image/jpeg')],
  },
  {
    name: 'SVG as image/svg+xml and SVG bytes labelled image/png',
    status: 415,
    code: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
    send: [score(() => svgFrame(), 'image/svg+xml'), score(() => svgFrame(), 'image/png')],
  },
  {
    name: 'GIF as image/gif and GIF bytes labelled image/png',
    status: 415,
    code: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
    send: [score(gif, 'image/gif'), score(gif, 'image/png')],
  },
  {
    name: '20000×20000 PNG decompression bomb',
    status: 413,
    code: 'EDGE_ERR_FRAME_TOO_LARGE',
    send: [score(() => pngBomb(20000, 20000), 'image/png')],
  },
  {
    name: 'raw frame whose body does not fit the declared width',
    status: 422,
    code: 'EDGE_ERR_RAW_SIZE_MISMATCH',
    send: [
      raw({ 'x-frame-format': 'rgb8', 'x-frame-width': '9', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'mono8', 'x-frame-width': '8', 'x-frame-height': '6' }),
    ],
  },
  {
    name: 'raw frame with missing or invalid headers',
    status: 400,
    code: 'EDGE_ERR_RAW_HEADERS_INVALID',
    send: [
      raw({}),
      raw({ 'x-frame-width': '8', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'yuv422', 'x-frame-width': '8', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'rgb8', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'rgb8', 'x-frame-width': 'eight', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'rgb8', 'x-frame-width': '0', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'rgb8', 'x-frame-width': '-8', 'x-frame-height': '6' }),
      raw({ 'x-frame-format': 'rgb8', 'x-frame-width': '8', 'x-frame-height': '70000' }),
    ],
  },
  {
    name: 'text/plain and application/json bodies',
    status: 415,
    code: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
    send: [
      score(() => Buffer.from('not a frame'), 'text/plain'),
      score(() => Buffer.from(JSON.stringify({ image: 'aGVsbG8=' })), 'application/json'),
    ],
  },
  {
    name: 'image bytes labelled application/json',
    status: 415,
    code: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
    send: [score(goodFrame, 'application/json'), score(() => Buffer.alloc(0), 'application/json')],
  },
  {
    name: 'no Content-Type',
    status: 415,
    code: 'EDGE_ERR_UNSUPPORTED_MEDIA_TYPE',
    send: [score(goodFrame, null)],
  },
  {
    name: 'bad X-Frame-Id / X-Camera-Id',
    status: 400,
    code: 'EDGE_ERR_BAD_REQUEST',
    send: [
      score(goodFrame, 'image/png', { 'x-frame-id': 'frame 1' }),
      score(goodFrame, 'image/png', { 'x-frame-id': 'f'.repeat(129) }),
      score(goodFrame, 'image/png', { 'x-camera-id': 'cam\t1' }),
    ],
  },
];

describe('bad frames on POST /v1/score', () => {
  it.each(cases)('$name → $status $code, then the next frame scores', async ({ status, code, send }) => {
    const d = await start();
    for (const s of send) expectError(await s(d.url), status, code);
    await expectStillScores(d.url);
    await expectCounted(d.url, code, send.length);
  });

  it('an unknown route → 404 EDGE_ERR_NOT_FOUND, and its path does not become a metric label', async () => {
    const d = await start();
    expectError(await request(`${d.url}/v1/nope`), 404, 'EDGE_ERR_NOT_FOUND');
    expectError(
      await postFrame(`${d.url}/v1/scores?x=1`, await goodFrame(), 'image/png'),
      404,
      'EDGE_ERR_NOT_FOUND',
    );
    await expectStillScores(d.url);
    const samples = await scrape(d.url);
    const notFound = samples.filter((s) => s.name === REQUESTS && s.labels.outcome === 'EDGE_ERR_NOT_FOUND');
    expect(notFound.reduce((sum, s) => sum + s.value, 0)).toBe(2);
    expect(samples.filter((s) => /nope|scores/.test(s.labels.route ?? ''))).toEqual([]);
  });
});

describe('bodies over BODY_LIMIT_BYTES', () => {
  const LIMIT = 65536;
  const env = { BODY_LIMIT_BYTES: String(LIMIT) };

  it('a frame under the limit is scored', async () => {
    const d = await start(env);
    const png = await encodeFrame(noise(140, 140), 140, 140, 3, 'png');
    expect(png.length).toBeGreaterThan(LIMIT / 2);
    expect(png.length).toBeLessThan(LIMIT);
    const answer = await postFrame(`${d.url}/v1/score`, png, 'image/png');
    expect(answer.status).toBe(200);
  });

  it('a frame over the limit (with Content-Length) → 413 EDGE_ERR_BODY_TOO_LARGE', async () => {
    const d = await start(env);
    const png = await encodeFrame(noise(200, 200), 200, 200, 3, 'png');
    expect(png.length).toBeGreaterThan(LIMIT);
    expectError(await postFrame(`${d.url}/v1/score`, png, 'image/png'), 413, 'EDGE_ERR_BODY_TOO_LARGE');
    expectError(
      await postFrame(`${d.url}/v1/score`, Buffer.alloc(LIMIT + 1), 'application/octet-stream', {
        'x-frame-format': 'mono8',
        'x-frame-width': '1',
        'x-frame-height': String(LIMIT + 1),
      }),
      413,
      'EDGE_ERR_BODY_TOO_LARGE',
    );
    await expectStillScores(d.url);
    await expectCounted(d.url, 'EDGE_ERR_BODY_TOO_LARGE', 2);
  });

  it('a chunked body (no Content-Length) that grows over the limit → 413', async () => {
    const d = await start(env);
    const { port } = new URL(d.url);
    const answer = await new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: Number(port),
          method: 'POST',
          path: '/v1/score',
          headers: { 'content-type': 'image/png', 'transfer-encoding': 'chunked' },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(asAnswer(res.statusCode ?? 0, res.headers, body)));
        },
      );
      // The server may answer and close before every chunk is written; that is the point.
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
      });
      const chunk = Buffer.alloc(16 * 1024, 7);
      for (let i = 0; i < 8; i++) req.write(chunk);
      req.end();
    });
    expectError(answer, 413, 'EDGE_ERR_BODY_TOO_LARGE');
    await expectStillScores(d.url);
  });

  it('a Content-Length over the limit is refused before the body is sent', async () => {
    const d = await start(env);
    // The client announces 10 MB and sends nothing: a daemon that waited for the body would hang.
    const head =
      'POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n' +
      `Content-Length: ${10 * 1024 * 1024}\r\n\r\n`;
    const answer = await rawExchange(d.url, head, Buffer.alloc(0), 3000);
    expectError(asAnswer(answer.status, answer.headers, answer.body), 413, 'EDGE_ERR_BODY_TOO_LARGE');
    await expectStillScores(d.url);
    await expectCounted(d.url, 'EDGE_ERR_BODY_TOO_LARGE', 1);
  });
});
