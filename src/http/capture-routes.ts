import type { FastifyPluginAsync } from 'fastify';
import { Ajv } from 'ajv';
import { EdgeError, ErrorCodes } from '../errors.js';
import { captureSummary, ID_PATTERN, publicSidecar, type HumanLabel } from '../capture/record.js';
import type { CaptureService } from '../capture/service.js';
import { CAPTURE_REASONS, type CaptureReason } from '../capture/settings.js';
import { bearerGuard } from './auth.js';

export interface CaptureRouteOptions {
  capture: CaptureService;
  apiToken: string | undefined;
}

const labelSchema = {
  type: 'object',
  required: ['verdict'],
  additionalProperties: false,
  properties: {
    verdict: { enum: ['ok', 'defect'] },
    label: { type: 'string', minLength: 1, maxLength: 64 },
    by: { type: 'string', minLength: 1, maxLength: 128 },
    boxes: {
      type: 'array',
      maxItems: 256,
      items: {
        type: 'object',
        required: ['x', 'y', 'width', 'height'],
        additionalProperties: false,
        properties: {
          label: { type: 'string', minLength: 1, maxLength: 64 },
          x: { type: 'number', minimum: 0 },
          y: { type: 'number', minimum: 0 },
          width: { type: 'number', exclusiveMinimum: 0 },
          height: { type: 'number', exclusiveMinimum: 0 },
        },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const validateLabel = ajv.compile<Omit<HumanLabel, 'at'>>(labelSchema);

const MAX_PAGE = 500;

function query(q: unknown): Record<string, string | undefined> {
  return (q ?? {}) as Record<string, string | undefined>;
}

function captureId(params: unknown): string {
  const id = (params as { id?: string }).id ?? '';
  if (!ID_PATTERN.test(id)) throw new EdgeError(ErrorCodes.NOT_FOUND, 'no such capture');
  return id;
}

/**
 * The captures API for human review (README, "Capture for retraining"): a paged listing, the
 * frame as stored, its sidecar, and a label. Same bearer-token rule as scoring.
 */
export const captureRoutes: FastifyPluginAsync<CaptureRouteOptions> = async (app, opts) => {
  const { capture } = opts;
  if (opts.apiToken) app.addHook('onRequest', bearerGuard(opts.apiToken));

  app.get('/v1/captures', async (request) => {
    const q = query(request.query);
    const reason = q.reason;
    if (reason !== undefined && !(CAPTURE_REASONS as readonly string[]).includes(reason)) {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, `reason must be one of ${CAPTURE_REASONS.join(', ')}`);
    }
    if (q.labelled !== undefined && q.labelled !== 'true' && q.labelled !== 'false') {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, 'labelled must be true or false');
    }
    if (q.cursor !== undefined && !ID_PATTERN.test(q.cursor)) {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, 'cursor is not one this API gave');
    }
    const limit = q.limit === undefined ? 50 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
      throw new EdgeError(ErrorCodes.BAD_REQUEST, `limit must be an integer from 1 to ${MAX_PAGE}`);
    }
    const page = capture.store.list({
      camera: q.camera,
      reason: reason as CaptureReason | undefined,
      labelled: q.labelled === undefined ? undefined : q.labelled === 'true',
      cursor: q.cursor,
      limit,
    });
    return { items: page.items.map(captureSummary), next: page.next ?? null };
  });

  app.get('/v1/captures/:id', async (request, reply) => {
    const id = captureId(request.params);
    const r = capture.store.get(id);
    if (!r) throw new EdgeError(ErrorCodes.NOT_FOUND, 'no such capture');
    const bytes = await capture.store.readFrame(id);
    if (!bytes)
      throw new EdgeError(ErrorCodes.NOT_FOUND, 'the frame was uploaded and is no longer kept here');
    return reply.type(r.frame.mediaType).send(bytes);
  });

  app.get('/v1/captures/:id/meta', async (request) => {
    const r = capture.store.get(captureId(request.params));
    if (!r) throw new EdgeError(ErrorCodes.NOT_FOUND, 'no such capture');
    return { ...publicSidecar(r), upload: { state: r.upload.state, blob: r.upload.blob ?? null } };
  });

  app.put('/v1/captures/:id/label', { bodyLimit: 65_536 }, async (request) => {
    const id = captureId(request.params);
    if (!validateLabel(request.body)) {
      const first = validateLabel.errors?.[0];
      throw new EdgeError(
        ErrorCodes.BAD_REQUEST,
        `the label is invalid: ${first?.instancePath || '/'} ${first?.message ?? ''}`.trim(),
      );
    }
    const r = await capture.label(id, { ...request.body, at: new Date().toISOString() });
    if (!r) throw new EdgeError(ErrorCodes.NOT_FOUND, 'no such capture');
    return { id, label: r.label, upload: { state: r.upload.state } };
  });
};
