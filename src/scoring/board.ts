import { performance } from 'node:perf_hooks';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { CutJob, InferredFrame, ModelRuntime } from './model-runtime.js';
import type { SharedBoard } from './worker-protocol.js';
import type { FramePrediction } from './prediction.js';
import type { FrameInput, PreprocessLimits } from './preprocess.js';
import {
  boxOnBoard,
  checkRegions,
  cutInPlace,
  decodeBoard,
  prepareRegion,
  preparedRegion,
  regionGeometry,
  type PreparedRegion,
  type Region,
} from './regions.js';
import { regionTensor } from './tensor.js';

/** One region's answer: its prediction with detection boxes in board pixels. */
export interface RegionResult {
  id: string;
  ref?: string;
  type?: string;
  prediction: FramePrediction;
  inferenceMs: number;
  batchSize: number;
}

export interface BoardResult {
  width: number;
  height: number;
  regions: RegionResult[];
  defect: boolean;
  defectiveRegions: string[];
  /** preprocessMs sums the regions' cuts (which overlap in time); inferenceMs is the slowest batch. */
  timing: { decodeMs: number; preprocessMs: number; inferenceMs: number };
}

/** At most this many turned or large regions are cut by sharp at once (its pool has few threads). */
const SHARP_CONCURRENCY = 16;

/**
 * When the event loop cuts, it yields after this long, so other requests are served and a
 * worker's finished batch is answered and the worker given its next one without waiting behind
 * the cuts (4 ms left a single worker idle a third of a board; bench/README.md, "Board layouts").
 */
const CUT_SLICE_MS = 1;

/**
 * The shared copies of decoded boards, kept for the next board of the same size: copying a 15 MB
 * board into fresh memory took 13–21 ms here (a page fault every 4 KiB), into memory already
 * touched ~2 ms (bench/README.md, "Board layouts"). At most SHARED_KEPT idle copies, all of one
 * size (a line sends one board size); a board whose regions failed does not give its copy back.
 */
const SHARED_KEPT = 2;
const keptShared: SharedArrayBuffer[] = [];

function takeShared(bytes: number): SharedArrayBuffer {
  const at = keptShared.findIndex((b) => b.byteLength === bytes);
  return at >= 0 ? keptShared.splice(at, 1)[0]! : new SharedArrayBuffer(bytes);
}

function giveBackShared(data: SharedArrayBuffer): void {
  if (keptShared.some((b) => b.byteLength !== data.byteLength)) keptShared.length = 0;
  if (keptShared.length < SHARED_KEPT) keptShared.push(data);
}

/** Boards with fewer upright regions are cut on the event loop: sharing costs a copy. */
const SHARE_MIN_REGIONS = 16;

/**
 * Scores every region of a board on one runtime: the regions are admitted together (they count
 * against the runtime's queue; none is admitted when they do not all fit), the board is decoded
 * once, and each region is submitted as soon as its tensor is ready, so they reach the batcher
 * together and fill batches. Upright regions are cut in place, in chunks taken in turn by the
 * runtime's inference workers (which read the board from shared memory) and, beside a single
 * worker, the event loop; turned and large ones by sharp (docs/architecture.md, "The path of a frame").
 */
export async function scoreBoard(
  runtime: ModelRuntime,
  frame: FrameInput,
  regions: readonly Region[],
  limits: PreprocessLimits,
  metrics: Metrics,
): Promise<BoardResult> {
  const n = regions.length;
  if (runtime.depth + n > runtime.settings.maxQueue) {
    metrics.queueRejections.inc();
    throw new EdgeError(ErrorCodes.QUEUE_FULL, `the scoring queue has no room for ${n} regions`, {
      retryAfterSeconds: runtime.retryAfterSeconds(),
      depth: runtime.depth,
      regions: n,
    });
  }
  for (let i = 0; i < n; i++) runtime.admit();
  let waiting = n;
  const cancelRest = (): void => {
    for (; waiting > 0; waiting--) runtime.cancel();
  };
  let board;
  try {
    board = await decodeBoard(frame, limits);
    checkRegions(regions, board.width, board.height);
  } catch (err) {
    cancelRest();
    throw err;
  }
  const spec = runtime.manifest.input;
  const results = new Array<Promise<RegionResult> | undefined>(n);
  let preprocessMs = 0;
  let failure: Error | undefined;
  const fail = (err: unknown): void => {
    failure ??= err instanceof Error ? err : new Error(String(err));
  };
  const submit = (i: number, prepared: PreparedRegion): void => {
    const region = regions[i]!;
    preprocessMs += prepared.preprocessMs;
    metrics.preprocessDuration.observe(prepared.preprocessMs / 1000);
    waiting--;
    const result = runtime.submit(prepared).then((r) => regionResult(region, r));
    // Awaited once every region is cut; a batch that fails before then must not count as an
    // unhandled rejection meanwhile (the process treats those as fatal).
    result.catch(() => undefined);
    results[i] = result;
  };

  const inPlace: number[] = [];
  const bySharp: number[] = [];
  regions.forEach((r, i) => (cutInPlace(r) ? inPlace : bySharp).push(i));

  let nextSharp = 0;
  const sharpCutter = async (): Promise<void> => {
    while (nextSharp < bySharp.length && failure === undefined) {
      const i = bySharp[nextSharp++]!;
      try {
        submit(i, await prepareRegion(board, regions[i]!, spec));
      } catch (err) {
        fail(err);
      }
    }
  };

  // Upright regions, in jobs of a batch each: with a shared board, queued on the runtime for its
  // workers to cut and infer; beside a single worker the event loop also cuts the jobs no worker
  // has started. A board of fewer such regions the event loop cuts region by region.
  const size = runtime.cutBatchSize;
  const chunks: number[][] = [];
  for (let k = 0; k < inPlace.length; k += size) chunks.push(inPlace.slice(k, k + size));
  const jobs = new Map<number[], CutJob>();
  let shared: SharedBoard | undefined;
  if (inPlace.length >= SHARE_MIN_REGIONS && runtime.workerCount > 0) {
    const data = takeShared(board.data.length);
    new Uint8Array(data).set(board.data);
    shared = {
      data,
      width: board.width,
      height: board.height,
      channels: board.channels,
      order: board.order,
    };
    for (const chunk of chunks) {
      const rs = chunk.map((i) => regions[i]!);
      const job = runtime.submitCut(
        shared,
        rs,
        rs.map((r) => regionGeometry(r, spec)),
      );
      jobs.set(chunk, job);
      waiting -= chunk.length;
      chunk.forEach((i, k) => {
        const region = regions[i]!;
        const result = job.result.then((answers) => {
          const a = answers[k]!;
          preprocessMs += a.preprocessMs;
          metrics.preprocessDuration.observe(a.preprocessMs / 1000);
          return regionResult(region, a);
        });
        result.catch(() => undefined);
        results[i] = result;
      });
    }
  }
  const loopCutter = async (): Promise<void> => {
    let sliceStart = performance.now();
    const turn = async (): Promise<void> => {
      if (performance.now() - sliceStart < CUT_SLICE_MS) return;
      await new Promise(setImmediate);
      sliceStart = performance.now();
    };
    for (const chunk of chunks) {
      if (failure !== undefined) return;
      await turn();
      const job = jobs.get(chunk);
      if (job) {
        // A job no worker has started: cut here, straight into its batch tensor.
        const batch = runtime.claim(job);
        if (!batch) continue;
        const started = performance.now();
        try {
          for (const [index, i] of chunk.entries()) {
            await turn();
            regionTensor(board, regions[i]!, spec, { batch, index });
          }
        } catch (err) {
          runtime.cutFailed(job, err instanceof Error ? err : new Error(String(err)));
          continue;
        }
        runtime.cutDone(job, batch, performance.now() - started);
        continue;
      }
      for (const i of chunk) {
        await turn();
        const started = performance.now();
        try {
          const data = regionTensor(board, regions[i]!, spec)!;
          submit(i, preparedRegion(regions[i]!, spec, data, performance.now() - started));
        } catch (err) {
          fail(err);
        }
      }
    }
  };
  const cutters: Promise<void>[] = [];
  // With two or more workers the event loop leaves the cutting to them: it also dispatches the
  // batches, takes their answers and serves other requests, and cutting beside that made boards
  // slower; beside a single worker it pays (both measured, bench/README.md, "Board layouts").
  if (jobs.size === 0 || runtime.workerCount < 2) cutters.push(loopCutter());
  for (let k = 0; k < Math.min(SHARP_CONCURRENCY, bySharp.length); k++) cutters.push(sharpCutter());
  await Promise.all(cutters);
  if (failure !== undefined) {
    // Jobs no worker has started are dropped with the board.
    for (const [chunk, job] of jobs) {
      if (!runtime.takeBack(job)) continue;
      waiting += chunk.length;
      for (const i of chunk) results[i] = undefined;
    }
    cancelRest();
    // Regions already submitted finish on the runtime; their answers are dropped with the request.
    await Promise.allSettled(results.filter((r): r is Promise<RegionResult> => r !== undefined));
    if (shared) giveBackShared(shared.data);
    throw failure;
  }
  const done = await Promise.all(results as Promise<RegionResult>[]);
  // Every job has answered: no worker reads the shared copy any more, the next board may.
  if (shared) giveBackShared(shared.data);
  const defective = done.filter((r) => r.prediction.defect).map((r) => r.id);
  return {
    width: board.width,
    height: board.height,
    regions: done,
    defect: defective.length > 0,
    defectiveRegions: defective,
    timing: {
      decodeMs: board.decodeMs,
      preprocessMs,
      inferenceMs: Math.max(0, ...done.map((r) => r.inferenceMs)),
    },
  };
}

function regionResult(region: Region, r: InferredFrame): RegionResult {
  return {
    id: region.id,
    ...(region.ref !== undefined ? { ref: region.ref } : {}),
    ...(region.type !== undefined ? { type: region.type } : {}),
    prediction: onBoard(r.prediction, region),
    inferenceMs: r.inferenceMs,
    batchSize: r.batchSize,
  };
}

function onBoard(p: FramePrediction, region: Region): FramePrediction {
  if (!p.detections) return p;
  return { ...p, detections: p.detections.map((d) => ({ ...d, box: boxOnBoard(d.box, region) })) };
}
