import { Ajv, type ErrorObject } from 'ajv';
import { SCORING_FIELDS, fieldSchemas, type Config, type ScoringSettings } from '../config.js';
import { captureProblem, captureSchema, type DesiredCapture } from '../capture/settings.js';
import { driftSchema, type DesiredDrift } from '../drift/settings.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import { LAYOUT_NAME, layoutBodySchema } from '../layouts/schema.js';
import type { DesiredModel } from '../models/published-model.js';
import { manifestSchema } from '../scoring/manifest.js';
import { DEFAULT_TELEMETRY, type TelemetrySettings } from '../telemetry/settings.js';

export type { DesiredModel } from '../models/published-model.js';
export type { TelemetrySettings } from '../telemetry/settings.js';

/** A validated desired document: what the daemon should be doing. */
export interface DesiredState {
  version: number;
  model: DesiredModel | undefined;
  scoring: Partial<ScoringSettings>;
  telemetry: Partial<TelemetrySettings>;
  /** A shadow trial's candidate model (README, "Shadow trial"); undefined: no trial. */
  candidate: DesiredCandidate | undefined;
  /** The `capture` block (README, "Capture for retraining"); undefined keeps the defaults. */
  capture: DesiredCapture | undefined;
  /** The `drift` block (README, "Drift"); undefined keeps the defaults. */
  drift: DesiredDrift | undefined;
  /** The `layouts` block (README, "Board layouts"): board layouts by name; undefined: none from the twin. */
  layouts: Record<string, unknown> | undefined;
}

/** The desired `candidate`: a model block plus the share of frames it scores. */
export interface DesiredCandidate extends DesiredModel {
  /** Share of the line's frames the candidate scores too, 0 < r ≤ 1. */
  sampleRate: number;
}

const modelSchema = {
  type: 'object',
  required: ['url', 'sha256'],
  additionalProperties: false,
  properties: {
    ...manifestSchema.properties,
    url: { type: 'string', minLength: 1, maxLength: 4096 },
    sha256: { type: 'string', pattern: '^[0-9a-fA-F]{64}$' },
    sizeBytes: { type: 'integer', minimum: 1 },
  },
} as const;

/** The `model` shape plus the share of frames scored; defaults to a quarter of the line. */
const candidateSchema = {
  ...modelSchema,
  properties: {
    ...modelSchema.properties,
    sampleRate: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  },
} as const;

/** The environment's scoring fields, by the same schemas: the block overrides some of them. */
const scoringSchema = {
  type: 'object',
  additionalProperties: false,
  properties: fieldSchemas(SCORING_FIELDS),
} as const;

const telemetrySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    results: { enum: ['all', 'defects', 'none'] },
    maxBatchMessages: { type: 'integer', minimum: 1, maximum: 10000 },
    flushIntervalMs: { type: 'integer', minimum: 10, maximum: 600000 },
    statsIntervalSec: { type: 'integer', minimum: 1, maximum: 86400 },
  },
} as const;

/**
 * The desired properties we own. Keys we do not know are refused: a typo in a deployment
 * (`scorring`) must be reported, not silently ignored. `$`-prefixed twin metadata is allowed.
 */
const desiredSchema = {
  type: 'object',
  additionalProperties: false,
  patternProperties: { '^\\$': {} },
  properties: {
    model: { oneOf: [modelSchema, { type: 'null' }] },
    scoring: { oneOf: [scoringSchema, { type: 'null' }] },
    telemetry: { oneOf: [telemetrySchema, { type: 'null' }] },
    candidate: { oneOf: [candidateSchema, { type: 'null' }] },
    capture: { oneOf: [captureSchema, { type: 'null' }] },
    drift: { oneOf: [driftSchema, { type: 'null' }] },
    layouts: {
      oneOf: [
        {
          type: 'object',
          maxProperties: 200,
          propertyNames: { pattern: LAYOUT_NAME.source },
          additionalProperties: layoutBodySchema,
        },
        { type: 'null' },
      ],
    },
  },
} as const;

/** A document that passed `desiredSchema`. */
interface DesiredDocument {
  $version?: unknown;
  model?: DesiredModel | null;
  scoring?: Partial<ScoringSettings> | null;
  telemetry?: Partial<TelemetrySettings> | null;
  candidate?: (DesiredModel & { sampleRate?: number }) | null;
  capture?: DesiredCapture | null;
  drift?: DesiredDrift | null;
  layouts?: Record<string, unknown> | null;
}

/** The share of frames a candidate scores when its block does not say. */
export const DEFAULT_SAMPLE_RATE = 0.25;

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile<DesiredDocument>(desiredSchema);

function describe(errors: ErrorObject[] | null | undefined): string {
  const seen = new Set<string>();
  for (const e of errors ?? []) {
    // oneOf with null produces a noise error for the null branch; keep the informative ones.
    if (e.keyword === 'oneOf' || (e.keyword === 'type' && e.params.type === 'null')) continue;
    const where = e.instancePath || '/';
    const what =
      e.keyword === 'additionalProperties'
        ? `has unknown key "${String(e.params.additionalProperty)}"`
        : (e.message ?? 'is invalid');
    seen.add(`${where} ${what}`);
  }
  return [...seen].slice(0, 8).join('; ') || 'invalid';
}

/** The deepest nesting we accept in a desired document; twin documents are shallow. */
const MAX_DEPTH = 8;

function depth(v: unknown, d = 0): number {
  if (d > MAX_DEPTH || v === null || typeof v !== 'object') return d;
  let max = d;
  for (const child of Object.values(v)) max = Math.max(max, depth(child, d + 1));
  return max;
}

/**
 * Validates a whole desired document (after merging patches). Throws DESIRED_INVALID with the
 * reasons; the caller keeps its previous desired state, so a bad patch changes nothing.
 */
export function parseDesired(doc: unknown): DesiredState {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new EdgeError(ErrorCodes.DESIRED_INVALID, 'desired properties must be a JSON object');
  }
  if (depth(doc) > MAX_DEPTH) {
    throw new EdgeError(
      ErrorCodes.DESIRED_INVALID,
      `desired properties nest deeper than ${MAX_DEPTH} levels`,
    );
  }
  if (!validate(doc)) {
    throw new EdgeError(
      ErrorCodes.DESIRED_INVALID,
      `desired properties are invalid: ${describe(validate.errors)}`,
    );
  }
  const problem = doc.capture ? captureProblem(doc.capture) : undefined;
  if (problem) throw new EdgeError(ErrorCodes.DESIRED_INVALID, `desired properties are invalid: ${problem}`);
  const model = doc.model ?? undefined;
  const candidate = doc.candidate ?? undefined;
  return {
    version: typeof doc.$version === 'number' ? doc.$version : 0,
    model: model ? { ...model, sha256: model.sha256.toLowerCase() } : undefined,
    scoring: doc.scoring ?? {},
    telemetry: doc.telemetry ?? {},
    candidate: candidate
      ? {
          ...candidate,
          sha256: candidate.sha256.toLowerCase(),
          sampleRate: candidate.sampleRate ?? DEFAULT_SAMPLE_RATE,
        }
      : undefined,
    capture: doc.capture ?? undefined,
    drift: doc.drift ?? undefined,
    layouts: doc.layouts ?? undefined,
  };
}

/** JSON merge patch (RFC 7386), as IoT Hub applies desired patches: null deletes a key. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** The scoring settings in force: the environment's, overridden by the desired block. */
export function effectiveScoring(
  config: Pick<Config, 'scoring'>,
  desired: Partial<ScoringSettings>,
): ScoringSettings {
  return Object.freeze({ ...config.scoring, ...desired });
}

export function effectiveTelemetry(desired: Partial<TelemetrySettings>): TelemetrySettings {
  return Object.freeze({ ...DEFAULT_TELEMETRY, ...desired });
}
