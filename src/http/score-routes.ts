import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { ScoreOutcome, ScoringEngine } from '../scoring/engine.js';
import type { FramePrediction } from '../scoring/prediction.js';
import { PIXEL_FORMAT_NAMES, pixelFormat } from '../scoring/pixel-formats/index.js';
import { ACCEPTED_MEDIA_TYPES, type AcceptedMediaType, type FrameInput } from '../scoring/preprocess.js';
import { checkRegionList, type Layout } from '../layouts/schema.js';
import type { LayoutStore } from '../layouts/store.js';
import type { Region } from '../scoring/regions.js';
import { readMultipartBoard, type MultipartBoard } from './multipart-frame.js';
import { anomalyAnswer, anomalyInferences, includesOf } from './anomaly-answer.js';
import { bearerGuard } from './auth.js';
import { boardAnswer, boardAvaAnswer } from './board-answer.js';
import type { ModelStatusSource } from './model-routes.js';

export interface ScoreRouteOptions {
  engine: ScoringEngine;
  models: ModelStatusSource;
  apiToken: string | undefined;
  bodyLimitBytes: number;
  /** Board layouts for `?layout=` (README, "Board layouts"). */
  layouts?: LayoutStore;
  /** MAX_REGIONS: the most regions a board may have, ad hoc or by layout. */
  maxRegions?: number;
}

const ID_PATTERN = /^[\x21-\x7e]{1,128}$/;
const MAX_RAW_SIDE = 65535;

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function optionalId(request: FastifyRequest, name: string): string | undefined {
  const v = header(request, name);
  if (v === undefined) return undefined;
  if (!ID_PATTERN.test(v)) {
    throw new EdgeError(ErrorCodes.BAD_REQUEST, `${name} must be 1–128 printable ASCII characters`);
  }
  return v;
}

function rawDimension(request: FastifyRequest, name: string): number {
  const v = header(request, name);
  const n = v !== undefined && /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= MAX_RAW_SIDE)) {
    throw new EdgeError(
      ErrorCodes.RAW_HEADERS_INVALID,
      `${name} must be an integer from 1 to ${MAX_RAW_SIDE}`,
    );
  }
  return n;
}

/** `X-Frame-Bits`, when sent: the significant bits of each pixel (README, "Raw pixel formats"). */
function rawBits(request: FastifyRequest): { bits?: number } {
  const v = header(request, 'x-frame-bits');
  if (v === undefined) return {};
  if (!/^\d{1,2}$/.test(v)) {
    throw new EdgeError(ErrorCodes.RAW_HEADERS_INVALID, 'X-Frame-Bits must be an integer');
  }
  return { bits: Number(v) };
}

/**
 * Turns the request into a frame, checking media type and raw headers; nothing is decoded here.
 * A multipart board's frame is its `frame` part, with that part's Content-Type; raw headers are
 * the request's either way.
 */
function frameFrom(request: FastifyRequest): FrameInput {
  const board = multipartOf(request);
  const body = board ? board.frame : request.body;
  const mediaType = board
    ? board.mediaType
    : (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (!(ACCEPTED_MEDIA_TYPES as readonly string[]).includes(mediaType) || !Buffer.isBuffer(body)) {
    throw new EdgeError(
      ErrorCodes.UNSUPPORTED_MEDIA_TYPE,
      `Content-Type ${mediaType || '(none)'} is not accepted${board ? ' for the frame part' : ''}; send one of ${ACCEPTED_MEDIA_TYPES.join(', ')}`,
    );
  }
  const frame: FrameInput = { body, mediaType: mediaType as AcceptedMediaType };
  if (mediaType === 'application/octet-stream') {
    const format = header(request, 'x-frame-format')?.toLowerCase();
    if (!format || !pixelFormat(format)) {
      throw new EdgeError(
        ErrorCodes.RAW_HEADERS_INVALID,
        `X-Frame-Format must be one of ${PIXEL_FORMAT_NAMES.join(', ')}`,
      );
    }
    frame.raw = {
      format,
      width: rawDimension(request, 'x-frame-width'),
      height: rawDimension(request, 'x-frame-height'),
      ...rawBits(request),
    };
  }
  return frame;
}

function multipartOf(request: FastifyRequest): MultipartBoard | undefined {
  const body = request.body as Partial<MultipartBoard> | undefined;
  return body?.kind === 'multipart-board' ? (body as MultipartBoard) : undefined;
}

/**
 * The regions to score the board by: the ad-hoc ones of a multipart board (a list, or
 * `{"regions": [...]}`), else the layout `?layout=` names; undefined for a plain frame.
 */
function boardRegionsOf(
  request: FastifyRequest,
  opts: ScoreRouteOptions,
): { name: string | null; regions: readonly Region[] } | undefined {
  const board = multipartOf(request);
  if (board) {
    if ((request.query as { layout?: unknown }).layout !== undefined) {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, 'send either ad-hoc regions or ?layout=, not both');
    }
    const list = Array.isArray(board.regions)
      ? board.regions
      : (board.regions as { regions?: unknown })?.regions;
    return { name: null, regions: checkRegionList(list, opts.maxRegions ?? 1000) };
  }
  const layout = layoutOf(request, opts.layouts);
  return layout && { name: layout.name, regions: layout.regions };
}

/** The layout `?layout=` names, if any; LAYOUT_NOT_FOUND when it is not registered. */
function layoutOf(request: FastifyRequest, layouts: LayoutStore | undefined): Layout | undefined {
  const name = (request.query as { layout?: unknown }).layout;
  if (name === undefined) return undefined;
  if (typeof name !== 'string' || !layouts) {
    throw new EdgeError(ErrorCodes.LAYOUT_NOT_FOUND, 'no such layout');
  }
  return layouts.get(name);
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

function v1Answer(
  frameId: string,
  cameraId: string | null,
  outcome: ScoreOutcome,
  totalMs: number,
  anomaly?: object,
): object {
  const p: FramePrediction = outcome.prediction;
  return {
    frameId,
    cameraId,
    model: outcome.model,
    task: outcome.task,
    defect: p.defect,
    ...(p.classification ? { classification: p.classification } : {}),
    ...(p.detections ? { detections: p.detections } : {}),
    ...(anomaly ? { anomaly } : {}),
    ...(p.raw ? { raw: p.raw } : {}),
    timing: {
      queueMs: round(outcome.timing.queueMs),
      preprocessMs: round(outcome.timing.preprocessMs),
      inferenceMs: round(outcome.timing.inferenceMs),
      postprocessMs: round(outcome.timing.postprocessMs),
      totalMs: round(totalMs),
      batchSize: outcome.batchSize,
    },
  };
}

/** The Azure Video Analyzer HTTP-extension answer: classification tags and entities with 0..1 boxes. */
export function avaAnswer(p: FramePrediction, frame: { width: number; height: number }): object {
  const inferences: object[] = p.anomaly ? anomalyInferences(p.anomaly, p.defect, frame) : [];
  for (const c of p.classification ?? []) {
    inferences.push({
      type: 'classification',
      classification: { tag: { value: c.label, confidence: c.score } },
    });
  }
  for (const d of p.detections ?? []) {
    const r = (v: number): number => Math.round(v * 1e6) / 1e6;
    inferences.push({
      type: 'entity',
      entity: {
        tag: { value: d.label, confidence: d.score },
        box: {
          l: r(d.box.x / frame.width),
          t: r(d.box.y / frame.height),
          w: r(d.box.width / frame.width),
          h: r(d.box.height / frame.height),
        },
      },
    });
  }
  return { inferences };
}

/**
 * POST /v1/score and the AVA-compatible POST /score. The routes only turn requests into frames
 * and predictions into answers; what happens after scoring (telemetry, capture…) subscribes to
 * the engine's scored-frame stream.
 */
export const scoreRoutes: FastifyPluginAsync<ScoreRouteOptions> = async (app, opts) => {
  const { engine, models } = opts;
  // Only frames are bodies here: without fastify's JSON/text parsers, any other type is a 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ACCEPTED_MEDIA_TYPES as unknown as string[],
    { parseAs: 'buffer', bodyLimit: opts.bodyLimitBytes },
    (_request, body, done) => done(null, body),
  );
  // A board with ad-hoc regions: the frame and a regions JSON part (README, "Board layouts").
  app.addContentTypeParser('multipart/form-data', (request, payload, done) => {
    readMultipartBoard(request.headers, payload, opts.bodyLimitBytes).then(
      (board) => done(null, board),
      (err: Error) => done(err),
    );
  });
  if (opts.apiToken) app.addHook('onRequest', bearerGuard(opts.apiToken));
  // Refuse before reading a body the daemon could not score anyway.
  app.addHook('onRequest', async () => {
    if (!engine.ready) {
      const reason = models.waitingReason;
      throw new EdgeError(
        ErrorCodes.NOT_READY,
        reason ? `no model is ready: ${reason}` : 'no model is ready',
      );
    }
  });

  app.post('/v1/score', async (request, reply) => {
    const receivedAt = performance.now() - reply.elapsedTime;
    const frameId = optionalId(request, 'x-frame-id') ?? randomUUID();
    const cameraId = optionalId(request, 'x-camera-id') ?? null;
    const layout = boardRegionsOf(request, opts);
    if (layout) {
      const board = await engine.scoreRegions(frameFrom(request), layout.regions, {
        frameId,
        cameraId,
        receivedAt,
        ...(layout.name ? { layout: layout.name } : {}),
      });
      const ids = { frameId, cameraId, layout: layout.name };
      return reply.send(boardAnswer(ids, layout.regions, board, reply.elapsedTime));
    }
    const includes = includesOf(request);
    const outcome = await engine.score(frameFrom(request), { frameId, cameraId, receivedAt });
    const a = outcome.prediction.anomaly;
    const anomaly = a ? await anomalyAnswer(a, includes) : undefined;
    return reply.send(v1Answer(frameId, cameraId, outcome, reply.elapsedTime, anomaly));
  });

  app.post('/score', async (request, reply) => {
    const receivedAt = performance.now() - reply.elapsedTime;
    const frameId = optionalId(request, 'x-frame-id') ?? randomUUID();
    const cameraId = optionalId(request, 'x-camera-id') ?? null;
    const layout = boardRegionsOf(request, opts);
    if (layout) {
      const meta = { frameId, cameraId, receivedAt, ...(layout.name ? { layout: layout.name } : {}) };
      const board = await engine.scoreRegions(frameFrom(request), layout.regions, meta);
      return reply.send(boardAvaAnswer(layout.regions, board));
    }
    const outcome = await engine.score(frameFrom(request), { frameId, cameraId, receivedAt });
    const g = outcome.frame;
    return reply.send(avaAnswer(outcome.prediction, { width: g.frameWidth, height: g.frameHeight }));
  });
};
