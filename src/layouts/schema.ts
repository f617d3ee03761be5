import { Ajv, type ErrorObject } from 'ajv';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { Region } from '../scoring/regions.js';

/**
 * A board layout (README, "Board layouts"): the regions one board image is judged by, in board
 * pixels, as a pick-and-place centroid file gives them.
 */
export interface Layout {
  name: string;
  regions: Region[];
}

/** Layout names travel in URLs and file names: short, no path characters. */
export const LAYOUT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const MAX_SIDE = 65535;

const regionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'x', 'y', 'width', 'height'],
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 64 },
    x: { type: 'integer', minimum: 0, maximum: MAX_SIDE },
    y: { type: 'integer', minimum: 0, maximum: MAX_SIDE },
    width: { type: 'integer', minimum: 1, maximum: MAX_SIDE },
    height: { type: 'integer', minimum: 1, maximum: MAX_SIDE },
    angle: { type: 'number', minimum: -360, maximum: 360 },
    ref: { type: 'string', maxLength: 64 },
    type: { type: 'string', maxLength: 128 },
  },
} as const;

/** The body of `PUT /v1/layouts/{name}` and of one entry of the twin's `layouts` block. */
export const layoutBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['regions'],
  properties: { regions: { type: 'array', items: regionSchema } },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const validateBody = ajv.compile<{ regions: Region[] }>(layoutBodySchema);
const validateRegions = ajv.compile<Region[]>({ type: 'array', items: regionSchema });

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .slice(0, 5)
    .map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`)
    .join('; ');
}

/**
 * Checks a region list: schema, at least one region, unique ids, at most `maxRegions`.
 * Throws LAYOUT_INVALID or TOO_MANY_REGIONS.
 */
export function checkRegionList(value: unknown, maxRegions: number): Region[] {
  if (!validateRegions(value)) {
    throw new EdgeError(ErrorCodes.LAYOUT_INVALID, `invalid regions: ${describe(validateRegions.errors)}`);
  }
  if (value.length === 0)
    throw new EdgeError(ErrorCodes.LAYOUT_INVALID, 'a layout needs at least one region');
  if (value.length > maxRegions) {
    throw new EdgeError(
      ErrorCodes.TOO_MANY_REGIONS,
      `${value.length} regions; the limit is ${maxRegions} (MAX_REGIONS)`,
      { regions: value.length, maxRegions },
    );
  }
  const ids = new Set<string>();
  for (const r of value) {
    if (ids.has(r.id)) throw new EdgeError(ErrorCodes.LAYOUT_INVALID, `region id ${r.id} appears twice`);
    ids.add(r.id);
  }
  return value;
}

/** Checks a layout name and body. Throws LAYOUT_INVALID or TOO_MANY_REGIONS. */
export function parseLayout(name: string, body: unknown, maxRegions: number): Layout {
  if (!LAYOUT_NAME.test(name)) {
    throw new EdgeError(
      ErrorCodes.LAYOUT_INVALID,
      'a layout name is 1–64 letters, digits, dots, dashes or underscores, starting with a letter or digit',
    );
  }
  if (!validateBody(body)) {
    throw new EdgeError(ErrorCodes.LAYOUT_INVALID, `invalid layout: ${describe(validateBody.errors)}`);
  }
  return { name, regions: checkRegionList(body.regions, maxRegions) };
}
