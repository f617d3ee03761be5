import type { FastifyRequest } from 'fastify';
import sharp from 'sharp';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { AnomalyResult } from '../scoring/prediction.js';

/**
 * The anomaly part of the scoring answers (docs/model-families.md, "Anomaly detection"): the
 * score, threshold and regions, and on `?include=map` the map as a small grey PNG (base64).
 */

const INCLUDES = ['map'] as const;
export type Include = (typeof INCLUDES)[number];

/** The `include` query parameter (comma-separated); anything unknown is a 400 before scoring. */
export function includesOf(request: FastifyRequest): Set<Include> {
  const raw = (request.query as Record<string, unknown> | undefined)?.include;
  const out = new Set<Include>();
  if (raw === undefined) return out;
  const values = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => String(v).split(','));
  for (const v of values) {
    if (!(INCLUDES as readonly string[]).includes(v)) {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, `include=${v.slice(0, 32)} is not known; use include=map`);
    }
    out.add(v as Include);
  }
  return out;
}

/** An anomaly map as a grey PNG (the answer's `?include=map`, the console's overlay). */
export function anomalyMapPng(map: NonNullable<AnomalyResult['map']>): Promise<Buffer> {
  const { width, height, data } = map;
  return sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
    raw: { width, height, channels: 1 },
  })
    .toColourspace('b-w')
    .png()
    .toBuffer();
}

/** The `anomaly` object of a /v1/score answer. */
export async function anomalyAnswer(a: AnomalyResult, includes: Set<Include>): Promise<object> {
  const answer: Record<string, unknown> = { score: a.score, threshold: a.threshold, regions: a.regions };
  if (includes.has('map') && a.map) {
    const { width, height } = a.map;
    const png = await anomalyMapPng(a.map);
    answer.map = { width, height, contentType: 'image/png', data: png.toString('base64') };
  }
  return answer;
}

/** AVA inferences of an anomaly result: an `anomalous`/`normal` tag and one entity per region. */
export function anomalyInferences(
  a: AnomalyResult,
  defect: boolean,
  frame: { width: number; height: number },
): object[] {
  const r = (v: number): number => Math.round(v * 1e6) / 1e6;
  const tag = defect ? 'anomalous' : 'normal';
  return [
    { type: 'classification', classification: { tag: { value: tag, confidence: a.score } } },
    ...a.regions.map((region) => ({
      type: 'entity',
      entity: {
        tag: { value: 'anomaly', confidence: region.peak },
        box: {
          l: r(region.box.x / frame.width),
          t: r(region.box.y / frame.height),
          w: r(region.box.width / frame.width),
          h: r(region.box.height / frame.height),
        },
      },
    })),
  ];
}
