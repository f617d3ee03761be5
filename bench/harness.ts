/** What the bench's runs share: load clients, the in-process driver, processes, formatting. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import sharp from 'sharp';
import { Pool } from 'undici';
import type { ScoringSettings } from '../src/config.js';
import { ModelRuntime } from '../src/scoring/model-runtime.js';
import { inferFrame } from '../src/scoring/infer-frame.js';
import { prepareFrame, type FrameInput } from '../src/scoring/preprocess.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { freePort } from '../test/helpers/child-daemon.js';

export { freePort };

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const percentile = (sorted: number[], p: number): number =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;

export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** Rounds of equal length as one point: mean rate, percentiles over all their latencies. */
export function merged(rounds: Point[], latencies: number[]): Point {
  latencies.sort((a, b) => a - b);
  return {
    framesPerSec: sum(rounds.map((p) => p.framesPerSec)) / rounds.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

export interface Point {
  framesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors?: number;
}

export interface Arrangement {
  workers: number;
  intraOpThreads: number;
  maxBatchSize: number;
}

export function settingsFor(a: Arrangement): ScoringSettings {
  return {
    executionProviders: ['cpu'],
    maxBatchSize: a.maxBatchSize,
    maxBatchDelayMs: 2,
    workers: a.workers,
    maxQueue: 1024,
    intraOpThreads: a.intraOpThreads,
    intraOpSpinning: false,
  };
}

export async function loadRuntime(modelPath: string, a: Arrangement): Promise<ModelRuntime> {
  return ModelRuntime.load({
    modelPath,
    role: 'active',
    settings: settingsFor(a),
    warmupRuns: 2,
    logger: pino({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
  });
}

/** Turns a frame into the model's tensor: the daemon's `prepareFrame`, or another path to compare. */
export type Prepare = typeof prepareFrame;

/**
 * Same code path as the daemon's engine.score() (`inferFrame`: admit, decode/pre-process, queue,
 * infer), or with another pre-processing path on the event loop.
 */
export async function scoreInProcess(
  runtime: ModelRuntime,
  frame: FrameInput,
  prepare: Prepare = prepareFrame,
): Promise<void> {
  const limits = { maxPixels: 100_000_000 };
  if (prepare === prepareFrame) {
    await inferFrame(runtime, frame, limits);
    return;
  }
  runtime.admit();
  let prepared;
  try {
    prepared = await prepare(frame, runtime.manifest.input, limits);
  } catch (err) {
    runtime.cancel();
    throw err;
  }
  await runtime.submit(prepared);
}

/** Keeps `inFlight` frames in the pipeline for `seconds` and counts completions. */
export async function inProcessThroughput(
  runtime: ModelRuntime,
  frames: FrameInput[],
  inFlight: number,
  seconds: number,
  sink?: number[],
  prepare: Prepare = prepareFrame,
): Promise<Point> {
  const latencies: number[] = [];
  let done = 0;
  let next = 0;
  const warmEnd = performance.now() + 1500;
  let measureStart = 0;
  let stopAt = Infinity;
  const lane = async (): Promise<void> => {
    for (;;) {
      const now = performance.now();
      if (now >= stopAt) return;
      if (!measureStart && now >= warmEnd) {
        measureStart = now;
        stopAt = now + seconds * 1000;
      }
      const t0 = performance.now();
      await scoreInProcess(runtime, frames[next++ % frames.length]!, prepare);
      if (measureStart && t0 >= measureStart) {
        done++;
        latencies.push(performance.now() - t0);
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  sink?.push(...latencies);
  latencies.sort((a, b) => a - b);
  return { framesPerSec: done / seconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
}

/**
 * A bare node:http server in its own process that reads the whole body and answers a small JSON,
 * as the daemon does: the round trip of a frame over loopback between two processes, with no
 * decoding, framework or model. It is the floor under any daemon's one-connection latency.
 */
const ECHO_SERVER = `
const http = require('node:http');
const answer = JSON.stringify({ frameId: '00000000-0000-0000-0000-000000000000', pad: 'x'.repeat(300) });
http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end(answer); });
}).listen(Number(process.argv[1]), '127.0.0.1', () => console.log('listening'));
`;

export async function startEchoServer(port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', ECHO_SERVER, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    child.stdout.once('data', resolve);
    child.once('exit', reject);
  });
  return child;
}

/** POSTs one encoded frame and reads the whole answer: its status and the round trip, ms. */
export async function sendFrame(
  pool: Pool,
  path: string,
  frame: FrameInput,
): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const res = await pool.request({
    path,
    method: 'POST',
    body: frame.body,
    headers: { 'content-type': frame.mediaType },
  });
  await res.body.arrayBuffer();
  return { status: res.statusCode, ms: performance.now() - t0 };
}

export async function post(pool: Pool, path: string, frame: FrameInput): Promise<number> {
  const { status, ms } = await sendFrame(pool, path, frame);
  if (status !== 200) throw new Error(`${path} answered ${status}`);
  return ms;
}

/**
 * One frame at a time, alternating in the same run so both see the same machine: the in-process
 * path (this process, the daemon's own code), the daemon over HTTP at one connection, and the bare
 * loopback round trip of the same body (the floor). Alternating keeps slow drift (CPU clocks,
 * neighbours) out of the difference; runs minutes apart differ by more than the 1 ms looked for.
 */
export async function oneAtATime(
  runtime: ModelRuntime,
  daemonUrl: string,
  echoUrl: string,
  frames: FrameInput[],
  rounds: number,
): Promise<{ inProcess: Point; daemon: Point; floor: Point }> {
  const daemon = new Pool(new URL(daemonUrl).origin, { connections: 1 });
  const echo = new Pool(new URL(echoUrl).origin, { connections: 1 });
  const lat = { inProcess: [] as number[], daemon: [] as number[], floor: [] as number[] };
  try {
    for (let i = 0; i < rounds + 5; i++) {
      const frame = frames[i % frames.length]!;
      const t0 = performance.now();
      await scoreInProcess(runtime, frame);
      const inProcessMs = performance.now() - t0;
      const floorMs = await post(echo, new URL(echoUrl).pathname, frame);
      const daemonMs = await post(daemon, new URL(daemonUrl).pathname, frame);
      if (i < 5) continue; // warm-up: connections, first allocations
      lat.inProcess.push(inProcessMs);
      lat.floor.push(floorMs);
      lat.daemon.push(daemonMs);
    }
  } finally {
    await Promise.all([daemon.close(), echo.close()]);
  }
  const point = (xs: number[]): Point => {
    xs.sort((a, b) => a - b);
    return {
      framesPerSec: (1000 * xs.length) / xs.reduce((a, b) => a + b, 0),
      p50Ms: percentile(xs, 50),
      p99Ms: percentile(xs, 99),
    };
  };
  return { inProcess: point(lat.inProcess), daemon: point(lat.daemon), floor: point(lat.floor) };
}

/**
 * The load client: `connections` closed-loop lanes (each sends the next frame when the previous
 * answer arrived), or, with `rate`, an open loop that offers that many frames per second spread
 * over the lanes. undici reconnects per request where a server closes connections (the peer's
 * gunicorn sync workers answer `Connection: close`), which keeps latencies attributed correctly.
 */
export async function load(
  url: string,
  frames: FrameInput[],
  opts: { connections: number; seconds: number; rate?: number; sink?: number[] },
): Promise<Point> {
  const pool = new Pool(new URL(url).origin, { connections: opts.connections, pipelining: 1 });
  const { pathname, search } = new URL(url);
  const path = pathname + search;
  let next = 0;
  const one = async (): Promise<{ ok: boolean; ms: number }> => {
    const t0 = performance.now();
    try {
      const { status, ms } = await sendFrame(pool, path, frames[next++ % frames.length]!);
      return { ok: status === 200, ms };
    } catch {
      return { ok: false, ms: performance.now() - t0 };
    }
  };
  const run = async (seconds: number): Promise<Point> => {
    const latencies: number[] = [];
    let errors = 0;
    const end = performance.now() + seconds * 1000;
    const record = (r: { ok: boolean; ms: number }): void => {
      if (r.ok) latencies.push(r.ms);
      else errors++;
    };
    if (opts.rate) {
      const interval = 1000 / opts.rate;
      const inflight: Promise<void>[] = [];
      for (let t = performance.now(); t < end; t += interval) {
        const wait = t - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        inflight.push(one().then(record));
      }
      await Promise.all(inflight);
    } else {
      await Promise.all(
        Array.from({ length: opts.connections }, async () => {
          while (performance.now() < end) record(await one());
        }),
      );
    }
    if (seconds === opts.seconds) opts.sink?.push(...latencies);
    latencies.sort((a, b) => a - b);
    return {
      framesPerSec: latencies.length / seconds,
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      errors,
    };
  };
  try {
    await run(2); // warm-up: connections, first allocations
    return await run(opts.seconds);
  } finally {
    await pool.close();
  }
}

export async function startDaemonProcess(
  modelPath: string,
  a: Arrangement,
  port: number,
  dataDir: string,
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/main.js')], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: String(port),
      MODEL_PATH: modelPath,
      DATA_DIR: dataDir,
      EXECUTION_PROVIDERS: 'cpu',
      WORKERS: String(a.workers),
      INTRA_OP_THREADS: String(a.intraOpThreads),
      MAX_BATCH_SIZE: String(a.maxBatchSize),
      MAX_QUEUE: '1024',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    // A daemon that could not listen (the port taken by another process) must not be mistaken
    // for ready because that other process answers.
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`daemon exited before it was ready`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/v2/health/ready`);
      if (r.status === 200 && child.exitCode === null) return child;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error('daemon did not become ready');
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

export const fmt = (p: Point): string =>
  `${p.framesPerSec.toFixed(1).padStart(7)} frames/s  p50 ${p.p50Ms.toFixed(1).padStart(6)} ms  p99 ${p.p99Ms.toFixed(1).padStart(6)} ms` +
  (p.errors ? `  errors ${p.errors}` : '');

/** Synthetic AOI frames: a green board with pads, traces and sensor noise, so JPEGs have a realistic size. */
export async function makeBoardFrames(
  count: number,
  width: number,
  height: number,
  format: 'jpeg' | 'png',
): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  let seed = 12345;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let k = 0; k < count; k++) {
    const raw = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const pad = (x + k * 37) % 64 < 24 && (y + k * 11) % 48 < 16;
        const trace = (y + x / 3) % 90 < 3;
        const n = (rand() - 0.5) * 24;
        const o = (y * width + x) * 3;
        const [r, g, b] = pad ? [175, 170, 160] : trace ? [60, 120, 60] : [25, 80, 40];
        raw[o] = Math.max(0, Math.min(255, r + n));
        raw[o + 1] = Math.max(0, Math.min(255, g + n));
        raw[o + 2] = Math.max(0, Math.min(255, b + n));
      }
    }
    frames.push(
      await sharp(raw, { raw: { width: width, height: height, channels: 3 } })
        .toFormat(format, format === 'jpeg' ? { quality: 90 } : {})
        .toBuffer(),
    );
  }
  return frames;
}
