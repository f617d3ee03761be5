/**
 * Environment fields of board layouts (README, "Board layouts"), spread into the table in
 * `config.ts`, which checks them against its field type and generates the README table from them;
 * a file of their own keeps `config.ts` within the size limit.
 */
export const LAYOUT_FIELDS = {
  maxRegions: {
    env: 'MAX_REGIONS',
    doc: 'Most regions in one board layout (413 above).',
    schema: { type: 'integer', minimum: 1, maximum: 10_000 },
    default: '1000',
  },
} as const;
