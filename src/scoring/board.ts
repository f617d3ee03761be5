import { performance } from 'node:perf_hooks';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { ModelRuntime } from './model-runtime.js';
import type { FramePrediction } from './prediction.js';
import type { FrameInput, PreprocessLimits } from './preprocess.js';
import { boxOnBoard, checkRegions, decodeBoard, prepareRegion, type Region } from './regions.js';

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

/** At most this many regions are cut at once: sharp's pool has few threads, the rest would queue. */
const CUT_CONCURRENCY = 16;

/**
 * Upright regions are cut on the event loop (a fraction of a millisecond each): after this long
 * the cutting yields, so other requests are served and finished batches come back from the
 * workers while the rest of a board is cut.
 */
const CUT_SLICE_MS = 4;

/**
 * Scores every region of a board on one runtime: the regions are admitted together (they count
 * against the runtime's queue; none is admitted when they do not all fit), the board is decoded
 * once, each region is cut and submitted as soon as its tensor is ready, so they reach the batcher
 * together and fill batches (docs/architecture.md, "The path of a frame").
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
  const results = new Array<Promise<RegionResult>>(n);
  let preprocessMs = 0;
  let next = 0;
  let failure: Error | undefined;
  let sliceStart = performance.now();
  const cutter = async (): Promise<void> => {
    while (next < n && failure === undefined) {
      if (performance.now() - sliceStart > CUT_SLICE_MS) {
        await new Promise(setImmediate);
        sliceStart = performance.now();
        continue;
      }
      const i = next++;
      const region = regions[i]!;
      let prepared;
      try {
        prepared = await prepareRegion(board, region, spec);
      } catch (err) {
        failure ??= err instanceof Error ? err : new Error(String(err));
        return;
      }
      preprocessMs += prepared.preprocessMs;
      metrics.preprocessDuration.observe(prepared.preprocessMs / 1000);
      waiting--;
      results[i] = runtime.submit(prepared).then((r) => ({
        id: region.id,
        ...(region.ref !== undefined ? { ref: region.ref } : {}),
        ...(region.type !== undefined ? { type: region.type } : {}),
        prediction: onBoard(r.prediction, region),
        inferenceMs: r.inferenceMs,
        batchSize: r.batchSize,
      }));
    }
  };
  await Promise.all(Array.from({ length: Math.min(CUT_CONCURRENCY, n) }, cutter));
  if (failure !== undefined) {
    cancelRest();
    // Regions already submitted finish on the runtime; their answers are dropped with the request.
    await Promise.allSettled(results.filter(Boolean));
    throw failure;
  }
  const done = await Promise.all(results);
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

function onBoard(p: FramePrediction, region: Region): FramePrediction {
  if (!p.detections) return p;
  return { ...p, detections: p.detections.map((d) => ({ ...d, box: boxOnBoard(d.box, region) })) };
}
