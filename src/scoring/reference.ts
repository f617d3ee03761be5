/**
 * The reference profile that travels with a model in its manifest (`reference`, docs/drift.md):
 * what the frames it was validated on looked like, as frozen histograms, against which the daemon
 * measures drift. Computed by `edge-scorer model-patch --reference <folder>`; the scoring side
 * only carries and validates it.
 */

/** A feature's reference histogram: `edges` are the B + 1 bin boundaries, `counts` the B counts. */
export interface Histogram {
  edges: number[];
  counts: number[];
}

/** The numeric features a profile holds: the inputs' and the top score of the answer. */
export const FEATURES = ['luma', 'contrast', 'sharpness', 'topScore'] as const;
export type Feature = (typeof FEATURES)[number];

export interface ReferenceProfile {
  /** Frames the profile was computed from. */
  frames: number;
  features: Record<Feature, Histogram>;
  /** Share of frames per answer label (top class, best detection, or anomalous/normal). */
  labels: Record<string, number>;
}

const histogramSchema = {
  type: 'object',
  required: ['edges', 'counts'],
  additionalProperties: false,
  properties: {
    edges: { type: 'array', minItems: 2, maxItems: 101, items: { type: 'number' } },
    counts: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'integer', minimum: 0 } },
  },
} as const;

/** JSON schema of the manifest's `reference` block. */
export const referenceSchema = {
  type: 'object',
  required: ['frames', 'features', 'labels'],
  additionalProperties: false,
  properties: {
    frames: { type: 'integer', minimum: 1 },
    features: {
      type: 'object',
      required: [...FEATURES],
      additionalProperties: false,
      properties: Object.fromEntries(FEATURES.map((f) => [f, histogramSchema])) as Record<
        Feature,
        typeof histogramSchema
      >,
    },
    labels: {
      type: 'object',
      maxProperties: 10000,
      additionalProperties: { type: 'number', minimum: 0, maximum: 1 },
    },
  },
} as const;

/** What the schema cannot say: counts match the edges, edges ascend. Undefined when sound. */
export function referenceProblem(r: ReferenceProfile): string | undefined {
  for (const f of FEATURES) {
    const h = r.features[f];
    if (h.counts.length !== h.edges.length - 1)
      return `reference.features.${f} has ${h.counts.length} counts for ${h.edges.length} edges (needs edges − 1)`;
    for (let i = 1; i < h.edges.length; i++)
      if (!(h.edges[i]! > h.edges[i - 1]!)) return `reference.features.${f}.edges must ascend`;
  }
  return undefined;
}
