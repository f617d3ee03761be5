/**
 * The desired `drift` block (README, "Drift"): `{"windowFrames":500,"psiThreshold":0.25,
 * "perCamera":true,"enabled":true}`, all optional. Drift is measured only for a model whose
 * manifest carries a `reference`; without one there is nothing to compare with.
 */
export interface DriftSettings {
  enabled: boolean;
  /** Frames per window, per camera (or for the whole line): the last N answered frames. */
  windowFrames: number;
  /** A feature drifts when its PSI exceeds what a window this size reads by chance by this much. */
  psiThreshold: number;
  /** One window per camera (a camera out of focus shows alone) or one for the line. */
  perCamera: boolean;
}

export type DesiredDrift = Partial<DriftSettings>;

export const DEFAULT_DRIFT: Readonly<DriftSettings> = Object.freeze({
  enabled: true,
  windowFrames: 500,
  psiThreshold: 0.25,
  perCamera: true,
});

export const driftSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    enabled: { type: 'boolean' },
    windowFrames: { type: 'integer', minimum: 20, maximum: 100000 },
    psiThreshold: { type: 'number', exclusiveMinimum: 0, maximum: 10 },
    perCamera: { type: 'boolean' },
  },
} as const;

export function effectiveDrift(desired: DesiredDrift | undefined): Readonly<DriftSettings> {
  return Object.freeze({ ...DEFAULT_DRIFT, ...desired });
}
