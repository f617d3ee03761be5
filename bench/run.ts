/**
 * `npm run bench`: one run that measures, on the same frames and model,
 *  (a) the in-process limit: the daemon's own decode, pre-processing and inference code driven
 *      directly (no HTTP), with decode overlapped with inference and the best batch size / worker
 *      arrangement found in the run;
 *  (b) the daemon end to end over HTTP (closed-loop undici clients): saturated and at half that
 *      rate; then one frame at a time, alternating the in-process path, the daemon at one
 *      connection and a bare node:http server in another process (the loopback floor of a frame's
 *      round trip), so the one-connection difference and what of it the OS takes are measured
 *      together;
 *  (c) the Python peer integrators deploy today (bench/peer: gunicorn 2 workers + Flask + OpenCV
 *      DNN on a static-shape copy of the model), saturated.
 * It prints frames/s, p50/p99 latency and the ratios, and writes them to bench/results/.
 *
 * Options: --seconds N (measurement window per point, default 12), --no-peer, --quick, --telemetry
 * (the daemon sends every result upstream to the IoT Hub emulator, through its telemetry journal).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import sharp from 'sharp';
import { Pool } from 'undici';
import type { ScoringSettings } from '../src/config.js';
import { ModelRuntime } from '../src/scoring/model-runtime.js';
import { prepareFrame, type FrameInput } from '../src/scoring/preprocess.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { startIotHubEmulator, type IotHubEmulator } from '../test/helpers/iothub-emulator.js';
import { buildResNetLike, writeModelDir } from '../test/helpers/onnx-builder.js';
import { startPeer } from './peer.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name: string): boolean => args.includes(`--${name}`);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : fallback;
};
const QUICK = flag('quick');
const TELEMETRY = flag('telemetry');
const SECONDS = option('seconds', QUICK ? 5 : 12);
const FRAME_W = 1280;
const FRAME_H = 1024;

const MANIFEST = {
  name: 'resnet-bench',
  version: '1',
  task: 'classification',
  labels: ['ok', 'bridge', 'missing', 'shift'],
  defectLabels: ['bridge', 'missing', 'shift'],
  input: {
    width: 224,
    height: 224,
    resize: 'stretch',
    color: 'rgb',
    layout: 'nchw',
    dtype: 'float32',
    scale: 1 / 255,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  },
  output: { format: 'probabilities', topK: 3 },
};

const log = (...a: unknown[]): void => console.log(...a);

/** Synthetic AOI frames: a green board with pads, traces and sensor noise, so JPEGs have a realistic size. */
async function makeFrames(count: number): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  let seed = 12345;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let k = 0; k < count; k++) {
    const raw = Buffer.alloc(FRAME_W * FRAME_H * 3);
    for (let y = 0; y < FRAME_H; y++) {
      for (let x = 0; x < FRAME_W; x++) {
        const pad = (x + k * 37) % 64 < 24 && (y + k * 11) % 48 < 16;
        const trace = (y + x / 3) % 90 < 3;
        const n = (rand() - 0.5) * 24;
        const o = (y * FRAME_W + x) * 3;
        const [r, g, b] = pad ? [175, 170, 160] : trace ? [60, 120, 60] : [25, 80, 40];
        raw[o] = Math.max(0, Math.min(255, r + n));
        raw[o + 1] = Math.max(0, Math.min(255, g + n));
        raw[o + 2] = Math.max(0, Math.min(255, b + n));
      }
    }
    frames.push(
      await sharp(raw, { raw: { width: FRAME_W, height: FRAME_H, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
  }
  return frames;
}

const percentile = (sorted: number[], p: number): number =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** Rounds of equal length as one point: mean rate, percentiles over all their latencies. */
function merged(rounds: Point[], latencies: number[]): Point {
  latencies.sort((a, b) => a - b);
  return {
    framesPerSec: sum(rounds.map((p) => p.framesPerSec)) / rounds.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

interface Point {
  framesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors?: number;
}

interface Arrangement {
  workers: number;
  intraOpThreads: number;
  maxBatchSize: number;
}

function settingsFor(a: Arrangement): ScoringSettings {
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

async function loadRuntime(modelPath: string, a: Arrangement): Promise<ModelRuntime> {
  return ModelRuntime.load({
    modelPath,
    settings: settingsFor(a),
    warmupRuns: 2,
    logger: pino({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
  });
}

/** Same code path as the daemon's engine.score(): admit, decode/pre-process, queue, infer. */
async function scoreInProcess(runtime: ModelRuntime, frame: FrameInput): Promise<void> {
  runtime.admit();
  let prepared;
  try {
    prepared = await prepareFrame(frame, runtime.manifest.input, { maxPixels: 100_000_000 });
  } catch (err) {
    runtime.cancel();
    throw err;
  }
  await runtime.submit(prepared);
}

/** Keeps `inFlight` frames in the pipeline for `seconds` and counts completions. */
async function inProcessThroughput(
  runtime: ModelRuntime,
  frames: FrameInput[],
  inFlight: number,
  seconds: number,
  sink?: number[],
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
      await scoreInProcess(runtime, frames[next++ % frames.length]!);
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

async function startEchoServer(port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', ECHO_SERVER, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    child.stdout.once('data', resolve);
    child.once('exit', reject);
  });
  return child;
}

/** POSTs one JPEG frame and reads the whole answer: its status and the round trip, ms. */
async function sendFrame(pool: Pool, path: string, body: Buffer): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const res = await pool.request({ path, method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
  await res.body.arrayBuffer();
  return { status: res.statusCode, ms: performance.now() - t0 };
}

async function post(pool: Pool, path: string, body: Buffer): Promise<number> {
  const { status, ms } = await sendFrame(pool, path, body);
  if (status !== 200) throw new Error(`${path} answered ${status}`);
  return ms;
}

/**
 * One frame at a time, alternating in the same run so both see the same machine: the in-process
 * path (this process, the daemon's own code), the daemon over HTTP at one connection, and the bare
 * loopback round trip of the same body (the floor). Alternating keeps slow drift (CPU clocks,
 * neighbours) out of the difference; runs minutes apart differ by more than the 1 ms looked for.
 */
async function oneAtATime(
  runtime: ModelRuntime,
  daemonUrl: string,
  echoUrl: string,
  frames: Buffer[],
  rounds: number,
): Promise<{ inProcess: Point; daemon: Point; floor: Point }> {
  const daemon = new Pool(new URL(daemonUrl).origin, { connections: 1 });
  const echo = new Pool(new URL(echoUrl).origin, { connections: 1 });
  const lat = { inProcess: [] as number[], daemon: [] as number[], floor: [] as number[] };
  try {
    for (let i = 0; i < rounds + 5; i++) {
      const jpeg = frames[i % frames.length]!;
      const t0 = performance.now();
      await scoreInProcess(runtime, { body: jpeg, mediaType: 'image/jpeg' });
      const inProcessMs = performance.now() - t0;
      const floorMs = await post(echo, new URL(echoUrl).pathname, jpeg);
      const daemonMs = await post(daemon, new URL(daemonUrl).pathname, jpeg);
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
async function load(
  url: string,
  frames: Buffer[],
  opts: { connections: number; seconds: number; rate?: number; sink?: number[] },
): Promise<Point> {
  const pool = new Pool(new URL(url).origin, { connections: opts.connections, pipelining: 1 });
  const path = new URL(url).pathname;
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

async function startDaemonProcess(
  modelPath: string,
  a: Arrangement,
  port: number,
  dataDir: string,
  extraEnv: Record<string, string> = {},
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/main.js')], {
    env: {
      ...process.env,
      ...extraEnv,
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
    try {
      const r = await fetch(`http://127.0.0.1:${port}/v2/health/ready`);
      if (r.status === 200) return child;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error('daemon did not become ready');
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

const fmt = (p: Point): string =>
  `${p.framesPerSec.toFixed(1).padStart(7)} frames/s  p50 ${p.p50Ms.toFixed(1).padStart(6)} ms  p99 ${p.p99Ms.toFixed(1).padStart(6)} ms` +
  (p.errors ? `  errors ${p.errors}` : '');

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'edge-scorer-bench-'));
  try {
    log(
      `edge-scorer bench: ${cpus().length} cores (${cpus()[0]?.model ?? 'cpu'}), node ${process.version}, ${SECONDS}s per point`,
    );
    const load1 = loadavg()[0]!;
    if (load1 > 0.5)
      log(`warning: load average ${load1.toFixed(2)} before the run; other work skews every figure`);
    const dyn = await writeModelDir(
      path.join(work, 'dynamic'),
      buildResNetLike({ batch: 'dynamic' }),
      MANIFEST,
    );
    const fixed = await writeModelDir(path.join(work, 'static'), buildResNetLike({ batch: 1 }), MANIFEST);
    const jpegs = await makeFrames(8);
    const frames: FrameInput[] = jpegs.map((body) => ({ body, mediaType: 'image/jpeg' }));
    log(
      `model: ResNet-18-like 224×224 (${MANIFEST.labels.length} classes); frames: ${jpegs.length} × ${FRAME_W}×${FRAME_H} JPEG, ~${Math.round(jpegs[0]!.length / 1024)} KiB`,
    );

    // (a) in-process limit: search the arrangements, keep the best.
    const arrangements: Arrangement[] = [];
    const batches = QUICK ? [1, 4] : [1, 2, 4, 8];
    for (const [workers, intraOpThreads] of [
      [1, 0],
      [2, 1],
    ] as const) {
      for (const maxBatchSize of batches) arrangements.push({ workers, intraOpThreads, maxBatchSize });
    }
    let best: { a: Arrangement; point: Point } | undefined;
    for (const a of arrangements) {
      const runtime = await loadRuntime(dyn.modelPath, a);
      const inFlight = a.workers * a.maxBatchSize * 2 + 2;
      const point = await inProcessThroughput(runtime, frames, inFlight, SECONDS);
      await runtime.close();
      log(
        `in-process  workers=${a.workers} threads=${a.intraOpThreads || 'auto'} batch≤${a.maxBatchSize}: ${fmt(point)}`,
      );
      if (!best || point.framesPerSec > best.point.framesPerSec) best = { a, point };
    }
    const search = best!;

    // (b) the daemon over HTTP, in its own process, with the best arrangement.
    const port = 18080;
    // --telemetry: every result goes upstream (the journal, the publisher, the SDK over TLS).
    let hub: IotHubEmulator | undefined;
    if (TELEMETRY) hub = await startIotHubEmulator({ desired: { telemetry: { results: 'all' } } });
    const daemon = await startDaemonProcess(
      dyn.modelPath,
      search.a,
      port,
      path.join(work, 'data'),
      hub?.env() ?? {},
    );
    // Connected once its start event is upstream.
    await hub?.waitForMessages((m) => m.output === 'events', 30_000);
    const url = `http://127.0.0.1:${port}/v1/score`;
    const connections = Math.max(8, search.a.workers * search.a.maxBatchSize * 2 + 2);
    // Saturated: the best arrangement in process and the daemon, alternated in three rounds so
    // that drift of the machine falls on both alike. The limit is this fresh measurement, not the
    // search's maximum: the best of eight noisy points overstates its own arrangement.
    const limitRuntime = await loadRuntime(dyn.modelPath, search.a);
    const inFlight = search.a.workers * search.a.maxBatchSize * 2 + 2;
    const rounds = 3;
    const limitLatencies: number[] = [];
    const saturatedLatencies: number[] = [];
    const limitRounds: Point[] = [];
    const saturatedRounds: Point[] = [];
    for (let r = 0; r < rounds; r++) {
      limitRounds.push(
        await inProcessThroughput(limitRuntime, frames, inFlight, SECONDS / rounds, limitLatencies),
      );
      saturatedRounds.push(
        await load(url, jpegs, { connections, seconds: SECONDS / rounds, sink: saturatedLatencies }),
      );
    }
    await limitRuntime.close();
    const limit = { a: search.a, point: merged(limitRounds, limitLatencies) };
    const saturated = {
      ...merged(saturatedRounds, saturatedLatencies),
      errors: sum(saturatedRounds.map((p) => p.errors ?? 0)),
    };
    log(`in-process limit (${rounds} rounds alternated with the daemon): ${fmt(limit.point)}`);
    log(`daemon HTTP saturated (${connections} connections): ${fmt(saturated)}`);
    const half = await load(url, jpegs, {
      connections,
      seconds: SECONDS,
      rate: Math.max(1, Math.round(saturated.framesPerSec / 2)),
    });
    log(`daemon HTTP half load (${Math.round(saturated.framesPerSec / 2)} frames/s offered): ${fmt(half)}`);
    // One frame at a time: in-process, the daemon at one connection and the loopback floor, alternated.
    const singleRuntime = await loadRuntime(dyn.modelPath, { ...limit.a, maxBatchSize: 1 });
    const echo = await startEchoServer(18081);
    const alternated = await oneAtATime(
      singleRuntime,
      url,
      'http://127.0.0.1:18081/',
      jpegs,
      QUICK ? 40 : Math.round(SECONDS * 10),
    );
    await Promise.all([singleRuntime.close(), stopProcess(echo)]);
    const { inProcess: single, daemon: one, floor } = alternated;
    log(`in-process single frame (one at a time): ${fmt(single)}`);
    log(`daemon HTTP one connection (alternated with it): ${fmt(one)}`);
    log(`loopback floor (same body to a bare node:http server in another process): ${fmt(floor)}`);
    await stopProcess(daemon);
    let telemetry: { results: number; messages: number } | undefined;
    if (hub) {
      const msgs = hub.messages('results');
      const results = msgs.reduce(
        (n, m) => n + (JSON.parse(m.body.toString('utf8')) as { results: unknown[] }).results.length,
        0,
      );
      telemetry = { results, messages: msgs.length };
      log(`telemetry: ${results} results upstream in ${msgs.length} messages`);
      await hub.close();
    }

    // (c) the Python peer, same frames, static copy of the same model.
    let peer: Point | undefined;
    if (!flag('no-peer')) {
      const p = await startPeer({ modelPath: fixed.modelPath, port: 18090 });
      try {
        peer = await load(`${p.url}/score`, jpegs, { connections, seconds: SECONDS });
        log(`python peer (gunicorn 2 workers + Flask + OpenCV DNN) saturated: ${fmt(peer)}`);
      } finally {
        await p.stop();
      }
    }

    const ratios = {
      saturatedVsLimit: saturated.framesPerSec / limit.point.framesPerSec,
      oneConnectionP50MinusSingleP50Ms: one.p50Ms - single.p50Ms,
      loopbackFloorP50Ms: floor.p50Ms,
      oneConnectionOverheadBeyondFloorMs: one.p50Ms - single.p50Ms - floor.p50Ms,
      ...(peer ? { throughputVsPeer: saturated.framesPerSec / peer.framesPerSec } : {}),
    };
    log('');
    log(`end-to-end saturated / in-process limit: ${ratios.saturatedVsLimit.toFixed(3)}  (target ≥ 0.95)`);
    log(
      `p50 one connection − in-process single p50: ${ratios.oneConnectionP50MinusSingleP50Ms.toFixed(2)} ms  (target ≤ 1 ms)`,
    );
    log(
      `  of which the loopback floor: ${floor.p50Ms.toFixed(2)} ms; the daemon's own: ${ratios.oneConnectionOverheadBeyondFloorMs.toFixed(2)} ms`,
    );
    if (peer)
      log(`daemon / python peer throughput: ${ratios.throughputVsPeer!.toFixed(2)}×  (target ≥ 2.5×)`);

    const result = {
      date: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, loadAvgAtStart: load1 },
      seconds: SECONDS,
      frames: { count: jpegs.length, width: FRAME_W, height: FRAME_H, bytes: jpegs[0]!.length },
      model: 'ResNet-18-like 224x224, dynamic batch (peer: batch 1)',
      inProcess: { search, best: limit, single },
      daemon: { arrangement: limit.a, connections, saturated, half, one },
      loopbackFloor: floor,
      peer,
      telemetry,
      ratios,
    };
    await mkdir(path.join(ROOT, 'bench/results'), { recursive: true });
    const file = path.join(ROOT, 'bench/results', `bench-${result.date.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, JSON.stringify(result, null, 2) + '\n');
    await writeFile(path.join(ROOT, 'bench/results/latest.json'), JSON.stringify(result, null, 2) + '\n');
    log(`results: ${path.relative(ROOT, file)}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
