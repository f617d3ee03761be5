/**
 * The desired `capture` block (README, "Capture for retraining"): which scored frames are kept for
 * training, how many, how much disk they may take and where they are uploaded. Every field is
 * optional; what is left out takes the default below.
 */

export const CAPTURE_REASONS = ['defect', 'uncertain', 'sample'] as const;
export type CaptureReason = (typeof CAPTURE_REASONS)[number];

/** Value of a reason under the disk budget: higher is kept longer. */
export const REASON_VALUE: Record<CaptureReason, number> = { sample: 0, uncertain: 1, defect: 2 };

export interface CaptureRule {
  reason: CaptureReason;
  /** Share of the matching frames taken, 0..1. */
  rate: number;
  /** `uncertain` only: a frame is uncertain when its top score, or any detection's, is inside. */
  scoreBand?: [number, number];
}

export interface UploadSettings {
  /** `blob` uploads to Azure Blob Storage (the local IoT Edge module or a cloud SAS); `none` keeps captures local. */
  target: 'blob' | 'none';
  container: string;
  /** Keep a capture's frame on disk after it is uploaded (its sidecar always stays for labels). */
  keepAfterUpload: boolean;
  /** Upload bandwidth cap, bytes per second. */
  maxBytesPerSec: number;
  /** A container SAS URL; a secret: never logged or reported. */
  sasUrl?: string;
  /** AzureML datastore path the JSONL `image_url`s start with (e.g. `azureml://datastores/aoi/paths`). */
  datastorePath: string;
}

export interface CaptureSettings {
  enabled: boolean;
  rules: CaptureRule[];
  perCameraPerHour: number;
  perLabelPerHour: number;
  maxBytes: number;
  maxItems: number;
  upload: UploadSettings;
}

/** The desired block as validated: anything may be left out. */
export type DesiredCapture = Partial<Omit<CaptureSettings, 'upload'>> & { upload?: Partial<UploadSettings> };

export const DEFAULT_CAPTURE: CaptureSettings = {
  enabled: false,
  rules: [
    { reason: 'defect', rate: 1 },
    { reason: 'uncertain', scoreBand: [0.3, 0.7], rate: 1 },
    { reason: 'sample', rate: 0.002 },
  ],
  perCameraPerHour: 600,
  perLabelPerHour: 300,
  maxBytes: 4 * 1024 ** 3,
  maxItems: 50_000,
  upload: {
    target: 'blob',
    container: 'aoi-captures',
    keepAfterUpload: false,
    maxBytesPerSec: 4_000_000,
    datastorePath: 'azureml://datastores/aoi_captures/paths',
  },
};

/** A container SAS: https anywhere, http only on loopback (a local emulator or the edge module's port). */
const SAS_URL_PATTERN = '^(https://|http://(127\\.0\\.0\\.1|localhost)(:[0-9]+)?/)[^\\s]+\\?[^\\s]*sig=';

const ruleSchema = {
  type: 'object',
  required: ['reason', 'rate'],
  additionalProperties: false,
  properties: {
    reason: { enum: CAPTURE_REASONS },
    rate: { type: 'number', minimum: 0, maximum: 1 },
    scoreBand: {
      type: 'array',
      minItems: 2,
      maxItems: 2,
      items: { type: 'number', minimum: 0, maximum: 1 },
    },
  },
} as const;

/** JSON schema of the desired `capture` block; twin/desired.ts validates it with the rest. */
export const captureSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    enabled: { type: 'boolean' },
    rules: { type: 'array', maxItems: 16, items: ruleSchema },
    perCameraPerHour: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    perLabelPerHour: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    maxBytes: { type: 'integer', minimum: 1_048_576, maximum: 1_099_511_627_776 },
    maxItems: { type: 'integer', minimum: 1, maximum: 10_000_000 },
    upload: {
      type: 'object',
      additionalProperties: false,
      properties: {
        target: { enum: ['blob', 'none'] },
        // Azure's container naming rule: 3–63 lowercase letters, digits and single hyphens.
        container: { type: 'string', pattern: '^(?!-)(?!.*--)[a-z0-9-]{3,63}(?<!-)$' },
        keepAfterUpload: { type: 'boolean' },
        maxBytesPerSec: { type: 'integer', minimum: 1024, maximum: 10_000_000_000 },
        sasUrl: { type: 'string', maxLength: 4096, pattern: SAS_URL_PATTERN },
        datastorePath: { type: 'string', minLength: 1, maxLength: 1024, pattern: '^[^\\s?#]+$' },
      },
    },
  },
} as const;

/** Checks what a schema cannot: a band's bounds in order. Returns a reason, or undefined when fine. */
export function captureProblem(c: DesiredCapture): string | undefined {
  for (const [i, r] of (c.rules ?? []).entries()) {
    if (r.scoreBand && r.scoreBand[0] > r.scoreBand[1])
      return `/capture/rules/${i}/scoreBand must be [low, high]`;
    if (r.reason !== 'uncertain' && r.scoreBand)
      return `/capture/rules/${i}/scoreBand applies to uncertain only`;
  }
  return undefined;
}

/** The settings in force: defaults overridden by the desired block. */
export function effectiveCapture(desired: DesiredCapture | undefined): CaptureSettings {
  const d = desired ?? {};
  return {
    ...DEFAULT_CAPTURE,
    ...d,
    rules: d.rules ?? DEFAULT_CAPTURE.rules,
    upload: { ...DEFAULT_CAPTURE.upload, ...d.upload },
  };
}
