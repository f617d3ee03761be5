import type { BoardResult, RegionResult } from '../scoring/board.js';
import type { Region } from '../scoring/regions.js';

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** One region as `POST /v1/score?layout=` answers it (README, "Board layouts"). */
function regionAnswer(r: RegionResult, region: Region): object {
  const p = r.prediction;
  const top = p.classification?.[0] ?? p.detections?.[0];
  return {
    id: r.id,
    ...(r.ref !== undefined ? { ref: r.ref } : {}),
    ...(r.type !== undefined ? { type: r.type } : {}),
    region: {
      x: region.x,
      y: region.y,
      width: region.width,
      height: region.height,
      ...(region.angle ? { angle: region.angle } : {}),
    },
    defect: p.defect,
    label: top?.label ?? null,
    score: top?.score ?? null,
    ...(p.classification ? { classification: p.classification } : {}),
    ...(p.detections ? { detections: p.detections } : {}),
  };
}

/** The board answer: the verdict, the defective regions and one entry per region, in layout order. */
export function boardAnswer(
  ids: { frameId: string; cameraId: string | null; layout: string | null },
  regions: readonly Region[],
  result: BoardResult & { model: { name: string; version: string }; task: string },
  totalMs: number,
): object {
  return {
    frameId: ids.frameId,
    cameraId: ids.cameraId,
    layout: ids.layout,
    model: result.model,
    task: result.task,
    defect: result.defect,
    defectiveRegions: result.defectiveRegions,
    board: { width: result.width, height: result.height },
    regions: result.regions.map((r, i) => regionAnswer(r, regions[i]!)),
    timing: {
      decodeMs: round(result.timing.decodeMs),
      preprocessMs: round(result.timing.preprocessMs),
      inferenceMs: round(result.timing.inferenceMs),
      totalMs: round(totalMs),
    },
  };
}

/** The AVA answer for a board: one entity per region, its box the region's, normalised to 0..1. */
export function boardAvaAnswer(regions: readonly Region[], result: BoardResult): object {
  const r6 = (v: number): number => Math.round(v * 1e6) / 1e6;
  return {
    inferences: result.regions.map((r, i) => {
      const region = regions[i]!;
      const top = r.prediction.classification?.[0] ?? r.prediction.detections?.[0];
      return {
        type: 'entity',
        entity: {
          id: r.id,
          tag: { value: top?.label ?? (r.prediction.defect ? 'defect' : 'ok'), confidence: top?.score ?? 1 },
          box: {
            l: r6(region.x / result.width),
            t: r6(region.y / result.height),
            w: r6(region.width / result.width),
            h: r6(region.height / result.height),
          },
        },
      };
    }),
  };
}
