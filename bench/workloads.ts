import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import type { ModelRuntime } from '../src/scoring/model-runtime.js';
import { prepareFrame, type FrameInput, type InputTensorData } from '../src/scoring/preprocess.js';
import { writeModelDir } from '../test/helpers/onnx-builder.js';
import {
  fmt,
  freePort,
  inProcessThroughput,
  load,
  loadRuntime,
  makeBoardFrames,
  merged,
  oneAtATime,
  percentile,
  startDaemonProcess,
  startEchoServer,
  stopProcess,
  type Arrangement,
  type Point,
} from './harness.js';
import { legacyPrepareFrame } from './legacy-preprocess.js';
import { DEBIAN_PYTHON, startPeer, type Peer } from './peer.js';
import { peerVenvPython } from './peer-venv.js';
import { buildTinyClassifier, TINY_MANIFEST as MANIFEST } from './tiny-model.js';

/**
 * The small-model workloads of `npm run bench` (bench/README.md, "Small model, three frame
 * shapes"): one 192×48 classifier, fed a 286×30 PNG text crop, a 1280×1024 board JPEG and the same
 * board as PNG. For each: the in-process limit, the daemon over HTTP and the onnxruntime Python
 * peer alternated in rounds, the OpenCV DNN peer, the previous pre-processing path in process, and
 * one frame at a time; once for all: the model alone (inference at its best batch, no decode, no
 * HTTP), the physical bound on any server's rate.
 */

const TEXTS = [
  'R1204 10k 0402',
  'C33 100n X7R',
  'U7 STM32F405',
  'LOT 7 2026-12',
  'D2 BAT54S',
  'Q4 AO3400',
  'J1 USB-C',
  'L3 4u7 1A',
];

/** Text crops as an AOI line's OCR step cuts them: 286×30, light print on a green mask. */
async function makeCrops(): Promise<Buffer[]> {
  return Promise.all(
    TEXTS.map((text, i) => {
      const svg =
        `<svg xmlns="http://www.w3.org/2000/svg" width="286" height="30">` +
        `<rect width="286" height="30" fill="rgb(${26 + i},${61 + i},${34})"/>` +
        `<text x="${6 + i}" y="23" font-family="monospace" font-size="22" fill="#e8e8d8">${text}</text></svg>`;
      return sharp(Buffer.from(svg)).removeAlpha().png().toBuffer();
    }),
  );
}

export interface WorkloadResult {
  name: string;
  frameBytes: number;
  arrangement: Arrangement;
  search: { a: Arrangement; point: Point }[];
  limit: Point;
  daemon: Point;
  ortPeer?: Point;
  dnnPeer?: Point;
  previousPathInProcess: Point;
  preprocessMs: { previous: number; current: number };
  single: Point;
  oneConnection: Point;
  loopbackFloor: Point;
  ratios: Record<string, number>;
}

export interface SmallModelResults {
  modelAlone: { a: Arrangement; point: Point }[];
  modelAloneBest: Point;
  workloads: WorkloadResult[];
  peers: { onnxruntime?: string; opencv?: string; skipped: string[] };
}

interface Options {
  seconds: number;
  quick: boolean;
  peers: boolean;
  work: string;
  log: (line: string) => void;
}

/** Debian's python3 when it has cv2, Flask and gunicorn (bench/peer/setup.sh), else the venv's. */
export function opencvPeerPython(venvPython: string | undefined): string | undefined {
  try {
    execFileSync(DEBIAN_PYTHON, ['-c', 'import cv2, flask, gunicorn'], { stdio: 'ignore' });
    return DEBIAN_PYTHON;
  } catch {
    return venvPython;
  }
}

/** Arrangements tried for the small model: its batches are cheap, so larger ones are worth a try. */
export function arrangements(quick: boolean): Arrangement[] {
  const out: Arrangement[] = [];
  for (const [workers, intraOpThreads] of [
    [1, 1],
    [2, 1],
  ] as const) {
    for (const maxBatchSize of quick ? [8] : [1, 8, 32]) out.push({ workers, intraOpThreads, maxBatchSize });
  }
  return out;
}

export const inFlightFor = (a: Arrangement): number => a.workers * a.maxBatchSize * 2 + 2;

/** Inference only: tensors prepared once, `inFlight` of them submitted over and over. */
export async function modelAloneThroughput(
  runtime: ModelRuntime,
  tensor: InputTensorData,
  inFlight: number,
  seconds: number,
): Promise<Point> {
  const geometry = { frameWidth: 192, frameHeight: 48, scaleX: 1, scaleY: 1, offsetX: 0, offsetY: 0 };
  let done = 0;
  const latencies: number[] = [];
  const warmEnd = performance.now() + 1000;
  let start = 0;
  let stopAt = Infinity;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (;;) {
        const now = performance.now();
        if (now >= stopAt) return;
        if (!start && now >= warmEnd) {
          start = now;
          stopAt = now + seconds * 1000;
        }
        const t0 = performance.now();
        runtime.admit();
        await runtime.submit({ data: tensor, geometry, preprocessMs: 0 });
        if (start && t0 >= start) {
          done++;
          latencies.push(performance.now() - t0);
        }
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { framesPerSec: done / seconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
}

/** Mean pre-processing time of one frame, one at a time, for a path. */
async function preprocessMs(
  prepare: typeof prepareFrame,
  frames: FrameInput[],
  spec: typeof MANIFEST.input,
): Promise<number> {
  const input = { ...spec, padValue: 114 } as Parameters<typeof prepareFrame>[1];
  for (const f of frames) await prepare(f, input, { maxPixels: 1e8 });
  const n = Math.max(40, frames.length * 5);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await prepare(frames[i % frames.length]!, input, { maxPixels: 1e8 });
  return (performance.now() - t0) / n;
}

async function startPeers(
  o: Options,
  modelPath: string,
): Promise<{ ort?: Peer; dnn?: Peer; names: SmallModelResults['peers'] }> {
  const names: SmallModelResults['peers'] = { skipped: [] };
  if (!o.peers) return { names };
  const venv = await peerVenvPython(o.log);
  let ort: Peer | undefined;
  let dnn: Peer | undefined;
  if (venv.python) {
    try {
      ort = await startPeer({
        modelPath,
        port: await freePort(),
        python: venv.python,
        engine: 'onnxruntime',
      });
      names.onnxruntime = `gunicorn 2 workers × 2 threads + Flask + onnxruntime (${path.relative(process.cwd(), venv.python)})`;
    } catch (err) {
      names.skipped.push(`onnxruntime peer: ${(err as Error).message.split('\n')[0]}`);
    }
  } else {
    names.skipped.push(`onnxruntime peer skipped: ${venv.why}`);
  }
  // The OpenCV DNN peer runs on Debian's python3-opencv when it is there (bench/peer/setup.sh),
  // else on the venv's opencv-python-headless.
  const python = opencvPeerPython(venv.python);
  if (python) {
    try {
      dnn = await startPeer({ modelPath, port: await freePort(), python, engine: 'opencv' });
      names.opencv = `gunicorn 2 sync workers + Flask + OpenCV DNN (${python.startsWith('/usr') ? python : path.relative(process.cwd(), python)})`;
    } catch (err) {
      names.skipped.push(`OpenCV DNN peer: ${(err as Error).message.split('\n')[0]}`);
    }
  } else {
    names.skipped.push('OpenCV DNN peer skipped: no python with cv2 (run bench/peer/setup.sh)');
  }
  for (const line of names.skipped) o.log(`warning: ${line}`);
  return { ort, dnn, names };
}

export async function runSmallModel(o: Options): Promise<SmallModelResults> {
  const { log, seconds } = o;
  const dyn = await writeModelDir(
    path.join(o.work, 'tiny-dynamic'),
    buildTinyClassifier({ batch: 'dynamic' }),
    MANIFEST,
  );
  const fixed = await writeModelDir(
    path.join(o.work, 'tiny-static'),
    buildTinyClassifier({ batch: 1 }),
    MANIFEST,
  );
  const asFrames = (bodies: Buffer[], mediaType: FrameInput['mediaType']): FrameInput[] =>
    bodies.map((body) => ({ body, mediaType }));
  const shapes: { name: string; frames: FrameInput[] }[] = [
    { name: 'text crop 286×30 PNG', frames: asFrames(await makeCrops(), 'image/png') },
    {
      name: 'board 1280×1024 JPEG',
      frames: asFrames(await makeBoardFrames(4, 1280, 1024, 'jpeg'), 'image/jpeg'),
    },
    {
      name: 'board 1280×1024 PNG',
      frames: asFrames(await makeBoardFrames(4, 1280, 1024, 'png'), 'image/png'),
    },
  ];
  log('');
  log(
    `small model: 192×48 crop classifier (3 conv + GAP + FC); frames: ${shapes.map((s) => `${s.name} ~${Math.round(s.frames[0]!.body.length / 1024)} KiB`).join(', ')}`,
  );

  // The model alone: the best any server could do with this model on this machine.
  const input = { ...MANIFEST.input, padValue: 114 } as Parameters<typeof prepareFrame>[1];
  const tensor = (await prepareFrame(shapes[0]!.frames[0]!, input, { maxPixels: 1e8 })).data;
  const modelAlone: { a: Arrangement; point: Point }[] = [];
  for (const a of arrangements(o.quick)) {
    const runtime = await loadRuntime(dyn.modelPath, a);
    const point = await modelAloneThroughput(runtime, tensor, inFlightFor(a), seconds / 3);
    await runtime.close();
    modelAlone.push({ a, point });
    log(`model alone workers=${a.workers} batch≤${a.maxBatchSize}: ${fmt(point)}`);
  }
  const modelAloneBest = modelAlone.reduce((b, x) =>
    x.point.framesPerSec > b.point.framesPerSec ? x : b,
  ).point;

  const peers = await startPeers(o, fixed.modelPath);
  const workloads: WorkloadResult[] = [];
  try {
    for (const shape of shapes) {
      log('');
      log(`— ${shape.name} —`);
      const { frames } = shape;
      const search: { a: Arrangement; point: Point }[] = [];
      for (const a of arrangements(o.quick)) {
        const runtime = await loadRuntime(dyn.modelPath, a);
        const point = await inProcessThroughput(runtime, frames, inFlightFor(a), seconds / 3);
        await runtime.close();
        search.push({ a, point });
        log(`in-process workers=${a.workers} batch≤${a.maxBatchSize}: ${fmt(point)}`);
      }
      const best = search.reduce((b, x) => (x.point.framesPerSec > b.point.framesPerSec ? x : b)).a;
      const limitRuntime = await loadRuntime(dyn.modelPath, best);
      const previous = await inProcessThroughput(
        limitRuntime,
        frames,
        inFlightFor(best),
        seconds / 2,
        undefined,
        legacyPrepareFrame,
      );
      log(`in-process, previous pre-processing path: ${fmt(previous)}`);

      const port = await freePort();
      const daemon = await startDaemonProcess(dyn.modelPath, best, port, path.join(o.work, 'data-small'));
      const url = `http://127.0.0.1:${port}/v1/score`;
      const connections = Math.max(8, inFlightFor(best));
      const rounds = 3;
      const lat = { limit: [] as number[], daemon: [] as number[], ort: [] as number[] };
      const pts = { limit: [] as Point[], daemon: [] as Point[], ort: [] as Point[] };
      for (let r = 0; r < rounds; r++) {
        pts.limit.push(
          await inProcessThroughput(limitRuntime, frames, inFlightFor(best), seconds / rounds, lat.limit),
        );
        pts.daemon.push(
          await load(url, frames, { connections, seconds: seconds / rounds, sink: lat.daemon }),
        );
        if (peers.ort)
          pts.ort.push(
            await load(`${peers.ort.url}/score`, frames, {
              connections,
              seconds: seconds / rounds,
              sink: lat.ort,
            }),
          );
      }
      await limitRuntime.close();
      const limit = merged(pts.limit, lat.limit);
      const daemonPoint = merged(pts.daemon, lat.daemon);
      const ortPeer = peers.ort ? merged(pts.ort, lat.ort) : undefined;
      log(
        `in-process limit (workers=${best.workers} batch≤${best.maxBatchSize}, ${rounds} rounds alternated): ${fmt(limit)}`,
      );
      log(`daemon HTTP saturated (${connections} connections): ${fmt(daemonPoint)}`);
      if (ortPeer) log(`python onnxruntime peer saturated: ${fmt(ortPeer)}`);
      const dnnPeer = peers.dnn
        ? await load(`${peers.dnn.url}/score`, frames, { connections, seconds: seconds / 2 })
        : undefined;
      if (dnnPeer) log(`python OpenCV DNN peer saturated: ${fmt(dnnPeer)}`);

      const singleRuntime = await loadRuntime(dyn.modelPath, { ...best, maxBatchSize: 1 });
      const echoPort = await freePort();
      const echo = await startEchoServer(echoPort);
      const alt = await oneAtATime(
        singleRuntime,
        url,
        `http://127.0.0.1:${echoPort}/`,
        frames,
        o.quick ? 40 : Math.round(seconds * 10),
      );
      await Promise.all([singleRuntime.close(), stopProcess(echo), stopProcess(daemon)]);
      log(`in-process single frame: ${fmt(alt.inProcess)}`);
      log(
        `daemon one connection:   ${fmt(alt.daemon)}  (loopback floor p50 ${alt.floor.p50Ms.toFixed(2)} ms)`,
      );
      const pre = {
        previous: await preprocessMs(legacyPrepareFrame, frames, MANIFEST.input),
        current: await preprocessMs(prepareFrame, frames, MANIFEST.input),
      };
      log(
        `pre-processing one frame: previous path ${pre.previous.toFixed(3)} ms, now ${pre.current.toFixed(3)} ms`,
      );

      const ratios: Record<string, number> = {
        daemonVsLimit: daemonPoint.framesPerSec / limit.framesPerSec,
        daemonShareOfModelAlone: daemonPoint.framesPerSec / modelAloneBest.framesPerSec,
        limitVsPreviousPathInProcess: limit.framesPerSec / previous.framesPerSec,
        oneConnectionP50MinusSingleP50Ms: alt.daemon.p50Ms - alt.inProcess.p50Ms,
      };
      if (ortPeer) ratios.daemonVsOnnxruntimePeer = daemonPoint.framesPerSec / ortPeer.framesPerSec;
      if (dnnPeer) ratios.daemonVsOpenCvDnnPeer = daemonPoint.framesPerSec / dnnPeer.framesPerSec;
      workloads.push({
        name: shape.name,
        frameBytes: shape.frames[0]!.body.length,
        arrangement: best,
        search,
        limit,
        daemon: daemonPoint,
        ortPeer,
        dnnPeer,
        previousPathInProcess: previous,
        preprocessMs: pre,
        single: alt.inProcess,
        oneConnection: alt.daemon,
        loopbackFloor: alt.floor,
        ratios,
      });
    }
  } finally {
    await Promise.all([peers.ort?.stop(), peers.dnn?.stop()]);
  }

  log('');
  log(
    `small model: model alone (best batch, no decode, no HTTP): ${modelAloneBest.framesPerSec.toFixed(0)} frames/s`,
  );
  for (const w of workloads) {
    const r = w.ratios;
    const x = (v: number | undefined): string => (v === undefined ? '   — ' : `${v.toFixed(2)}×`);
    log(
      `${w.name.padEnd(22)} daemon ${w.daemon.framesPerSec.toFixed(0).padStart(5)}/s` +
        `  ÷ onnxruntime peer ${x(r.daemonVsOnnxruntimePeer)}  ÷ OpenCV DNN peer ${x(r.daemonVsOpenCvDnnPeer)}` +
        `  ÷ in-process limit ${r.daemonVsLimit!.toFixed(3)}  share of model alone ${(100 * r.daemonShareOfModelAlone!).toFixed(0)}%` +
        `  limit ÷ previous path ${x(r.limitVsPreviousPathInProcess)}`,
    );
  }
  return { modelAlone, modelAloneBest, workloads, peers: peers.names };
}
