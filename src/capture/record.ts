import { REASON_VALUE, type CaptureReason } from './settings.js';

/** A human's answer for a capture (PUT /v1/captures/{id}/label). */
export interface HumanLabel {
  verdict: 'ok' | 'defect';
  label?: string;
  /** Boxes in pixels of the frame as posted. */
  boxes?: { label?: string; x: number; y: number; width: number; height: number }[];
  by?: string;
  at: string;
}

export type UploadState = 'pending' | 'uploaded' | 'quarantined' | 'local';

export interface UploadStatus {
  state: UploadState;
  attempts: number;
  /** Blob name of the frame (the sidecar is the same name with `.json`). */
  blob?: string;
  uploadedAt?: string;
  /** Bumped by every label; the sidecar blob is re-uploaded while it is ahead of `uploadedRevision`. */
  labelRevision: number;
  uploadedRevision: number;
  lastError?: { code: string; message: string; at: string };
}

/**
 * A capture's sidecar: everything known about the frame, written atomically beside it. Its
 * presence is what makes a capture exist (docs/capture.md, "On disk").
 */
export interface CaptureRecord {
  schema: 1;
  id: string;
  frameId: string;
  cameraId: string | null;
  capturedAt: string;
  scoredAt: string;
  reason: CaptureReason;
  rule: { reason: CaptureReason; rate: number; scoreBand?: [number, number] };
  frame: {
    /** File name beside the sidecar; absent once uploaded and removed locally. */
    file?: string;
    ext: string;
    mediaType: string;
    bytes: number;
    width: number;
    height: number;
    /** For raw camera buffers: what was posted (stored losslessly as PNG). */
    raw?: { format: string; width: number; height: number };
  };
  model: { name: string; version: string; sha256: string };
  task: string;
  answer: {
    defect: boolean;
    classification?: { label: string; score: number }[];
    detections?: {
      label: string;
      score: number;
      box: { x: number; y: number; width: number; height: number };
    }[];
  };
  label: HumanLabel | null;
  upload: UploadStatus;
}

/** One capture as `GET /v1/captures` lists it (the review page reads the same shape). */
export interface CaptureSummary {
  id: string;
  frameId: string;
  cameraId: string | null;
  capturedAt: string;
  reason: CaptureReason;
  model: { name: string; version: string };
  defect: boolean;
  label: HumanLabel | null;
  upload: { state: UploadState; blob: string | null };
  /** False once the frame was uploaded and removed here: it can still be labelled. */
  frameKept: boolean;
}

export function captureSummary(r: CaptureRecord): CaptureSummary {
  return {
    id: r.id,
    frameId: r.frameId,
    cameraId: r.cameraId,
    capturedAt: r.capturedAt,
    reason: r.reason,
    model: { name: r.model.name, version: r.model.version },
    defect: r.answer.defect,
    label: r.label,
    upload: { state: r.upload.state, blob: r.upload.blob ?? null },
    frameKept: r.frame.file !== undefined,
  };
}

/**
 * Eviction rank: lower goes first. Captures already safe upstream go first, then unlabelled ones,
 * and labelled captures not yet uploaded last; within each, sample < uncertain < defect.
 */
export function rankOf(r: CaptureRecord): number {
  const cls = r.upload.state === 'uploaded' ? 0 : r.label ? 2 : 1;
  return cls * 3 + REASON_VALUE[r.reason];
}

export const RANKS = 9;

/** Capture ids sort by time: base-36 milliseconds, then random hex. */
export const ID_PATTERN = /^[0-9a-z]{9}-[0-9a-f]{8}$/;

/** The sidecar as uploaded: the local upload bookkeeping stays local. */
export function publicSidecar(r: CaptureRecord): Omit<CaptureRecord, 'upload'> & { upload?: never } {
  const { upload: _upload, ...rest } = r;
  const { file: _file, ...frame } = r.frame;
  return { ...rest, frame: { ...frame } };
}
