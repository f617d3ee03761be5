import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { ScoredFrame } from '../scoring/engine.js';
import type { ReferenceProfile } from '../scoring/reference.js';
import type { DriftEvent } from '../telemetry/events.js';
import { DriftWindow, FEATURES, type DriftFigure } from './profile.js';
import { sampleOf } from './sample.js';
import { DEFAULT_DRIFT, effectiveDrift, type DesiredDrift, type DriftSettings } from './settings.js';

/** The features a window is judged on: the input and score histograms, and the label mix. */
export const JUDGED = [...FEATURES, 'labels'] as const;
export type Judged = (typeof JUDGED)[number];

/** Cameras with a window of their own; frames of further cameras share one (`other`). */
export const MAX_CAMERAS = 64;

/** The model drift is measured for: the active one, with its manifest's reference. */
export interface DriftModel {
  name: string;
  version: string;
  sha256: string;
  reference: ReferenceProfile | undefined;
}

export type { DriftEvent };

/** Reported `drift` (README, "Drift"). */
export interface DriftReport {
  state: 'off' | 'no-reference' | 'warming' | 'ok' | 'drifted';
  model: { name: string; version: string } | null;
  windowFrames: number;
  psiThreshold: number;
  perCamera: boolean;
  /** The feature and camera furthest above what chance reads (PSI − baseline), once a window is full. */
  worst: { feature: Judged; camera: string; psi: number; baseline: number } | null;
  drifted: { feature: Judged; camera: string }[];
  at: string;
}

export interface DriftMonitorOptions {
  registry: Registry;
  logger: Logger;
  /** The active model now (undefined while none serves). */
  model: () => DriftModel | undefined;
  onEvent?: (e: DriftEvent) => void;
  onReport?: (r: DriftReport) => void;
  /** Reported properties are refreshed at most this often while nothing crosses (ms). */
  reportEveryMs?: number;
}

interface CameraWindow {
  window: DriftWindow;
  seen: number;
  figures: Record<Judged, DriftFigure> | null;
}

/**
 * Drift (docs/drift.md): a scored-frame stream subscriber that keeps, per camera, a window of the
 * last answered frames' features and answers for the active model, and compares it with the
 * reference profile in the model's manifest. Every tenth of a window it sets
 * `edge_scorer_drift_psi{feature,camera}` (and the no-drift baseline), emits a `drift` event when a
 * feature crosses its threshold or falls back, and refreshes the reported `drift` state. A new
 * model starts new windows. The features are computed after the answer, on the libuv pool, from a
 * 128-pixel luma thumbnail; under load the stream drops the frames drift cannot keep up with
 * (counted by `edge_scorer_frame_stream_dropped_total{subscriber="drift"}`), so it measures a
 * sample of the line rather than slowing it.
 */
export class DriftMonitor {
  private settings: Readonly<DriftSettings> = DEFAULT_DRIFT;
  private sha256: string | undefined;
  private readonly windows = new Map<string, CameraWindow>();
  private readonly drifted = new Set<string>();
  private lastReport: DriftReport | undefined;
  private lastReportAt = 0;
  private readonly psi: Gauge<'feature' | 'camera'>;
  private readonly baseline: Gauge<'feature' | 'camera'>;
  private readonly frames: Counter<'outcome'>;

  constructor(private readonly opts: DriftMonitorOptions) {
    const registers = [opts.registry];
    this.psi = new Gauge({
      name: 'edge_scorer_drift_psi',
      help: 'Population stability index of the last window against the model reference, by feature and camera.',
      labelNames: ['feature', 'camera'],
      registers,
    });
    this.baseline = new Gauge({
      name: 'edge_scorer_drift_psi_baseline',
      help: 'What the PSI of a window this size reads with no drift, (B − 1)(1/n + 1/m), by feature and camera.',
      labelNames: ['feature', 'camera'],
      registers,
    });
    this.frames = new Counter({
      name: 'edge_scorer_drift_frames_total',
      help: 'Answered frames drift looked at: measured, or skipped (no reference, another model, unreadable).',
      labelNames: ['outcome'],
      registers,
    });
  }

  /** Applies the desired `drift` block (undefined: the defaults). Changing a window size restarts the windows. */
  setSettings(desired: DesiredDrift | undefined): void {
    const next = effectiveDrift(desired);
    const prev = this.settings;
    this.settings = next;
    if (next.windowFrames !== prev.windowFrames || next.perCamera !== prev.perCamera || !next.enabled)
      this.reset(this.sha256);
    this.publish(true);
  }

  /** Told that the active model may have changed: a new model starts new windows and is reported. */
  modelChanged(): void {
    this.current();
  }

  /** The scored-frame stream handler. */
  async handle(f: ScoredFrame): Promise<void> {
    const model = this.current();
    if (!model?.reference || f.role !== 'active' || f.model.sha256 !== model.sha256) {
      this.frames.inc({ outcome: 'skipped' });
      return;
    }
    let sample;
    try {
      sample = await sampleOf(f);
    } catch (err) {
      this.frames.inc({ outcome: 'skipped' });
      this.opts.logger.debug({ component: 'drift', frameId: f.frameId, err }, 'frame not measured');
      return;
    }
    if (this.sha256 !== model.sha256) return;
    this.frames.inc({ outcome: 'measured' });
    const camera = this.cameraKey(f.cameraId);
    let w = this.windows.get(camera);
    if (!w) {
      w = { window: new DriftWindow(model.reference, this.settings.windowFrames), seen: 0, figures: null };
      this.windows.set(camera, w);
    }
    w.window.add(sample);
    w.seen++;
    const step = Math.max(10, Math.floor(this.settings.windowFrames / 10));
    if (w.seen % step === 0) this.evaluate(camera, w, model);
  }

  /** The reported `drift` state now. */
  report(): DriftReport {
    const model = this.current();
    const { windowFrames, psiThreshold, perCamera, enabled } = this.settings;
    let worst: DriftReport['worst'] = null;
    for (const [camera, w] of this.windows) {
      for (const feature of JUDGED) {
        const f = w.figures?.[feature];
        if (f && (!worst || f.psi - f.baseline > worst.psi - worst.baseline))
          worst = { feature, camera, psi: f.psi, baseline: f.baseline };
      }
    }
    const drifted = [...this.drifted].sort().map((k) => {
      const [camera, feature] = splitKey(k);
      return { feature, camera };
    });
    const state: DriftReport['state'] = !enabled
      ? 'off'
      : !model?.reference
        ? 'no-reference'
        : drifted.length > 0
          ? 'drifted'
          : worst
            ? 'ok'
            : 'warming';
    return {
      state,
      model: model ? { name: model.name, version: model.version } : null,
      windowFrames,
      psiThreshold,
      perCamera,
      worst,
      drifted,
      at: new Date().toISOString(),
    };
  }

  /** The `drift` section of `stats`: the last figures per camera. */
  stats(): object {
    const cameras: Record<string, object> = {};
    for (const [camera, w] of this.windows) {
      cameras[camera] = { frames: w.window.frames, features: w.figures };
    }
    const { state } = this.report();
    return {
      state,
      windowFrames: this.settings.windowFrames,
      psiThreshold: this.settings.psiThreshold,
      cameras,
    };
  }

  private current(): DriftModel | undefined {
    if (!this.settings.enabled) return undefined;
    const model = this.opts.model();
    if (model?.sha256 !== this.sha256) {
      this.reset(model?.sha256);
      this.publish(true);
    }
    return model;
  }

  private cameraKey(cameraId: string | null): string {
    if (!this.settings.perCamera) return 'all';
    const camera = cameraId ?? 'default';
    if (this.windows.has(camera) || this.windows.size < MAX_CAMERAS - 1) return camera;
    return 'other';
  }

  private evaluate(camera: string, w: CameraWindow, model: DriftModel): void {
    const { psiThreshold: threshold, windowFrames } = this.settings;
    w.figures = w.window.figures(threshold);
    if (!w.figures) return;
    let changed = false;
    for (const feature of JUDGED) {
      const f = w.figures[feature];
      this.psi.set({ feature, camera }, f.psi);
      this.baseline.set({ feature, camera }, f.baseline);
      const key = `${camera}\u0000${feature}`;
      if (f.drifted === this.drifted.has(key)) continue;
      changed = true;
      if (f.drifted) this.drifted.add(key);
      else this.drifted.delete(key);
      const e: DriftEvent = {
        event: 'drift',
        state: f.drifted ? 'drifted' : 'cleared',
        feature,
        camera,
        psi: f.psi,
        baseline: f.baseline,
        threshold,
        window: windowFrames,
        model: { name: model.name, version: model.version },
      };
      this.opts.logger.warn({ component: 'drift', ...e }, f.drifted ? 'input drift' : 'drift cleared');
      this.opts.onEvent?.(e);
    }
    this.publish(changed);
  }

  private reset(sha256: string | undefined): void {
    this.sha256 = sha256;
    this.windows.clear();
    this.drifted.clear();
    this.psi.reset();
    this.baseline.reset();
  }

  /** Reports on every change of state, otherwise at most every `reportEveryMs`. */
  private publish(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastReportAt < (this.opts.reportEveryMs ?? 30_000)) return;
    const r = this.report();
    // Everything but the time and the running figures: a settings change is news too.
    const key = (x: DriftReport): string => JSON.stringify({ ...x, at: undefined, worst: undefined });
    const same = this.lastReport !== undefined && key(this.lastReport) === key(r);
    if (force && same && now - this.lastReportAt < (this.opts.reportEveryMs ?? 30_000)) return;
    this.lastReport = r;
    this.lastReportAt = now;
    this.opts.onReport?.(r);
  }
}

function splitKey(key: string): [string, Judged] {
  const i = key.indexOf('\u0000');
  return [key.slice(0, i), key.slice(i + 1) as Judged];
}
