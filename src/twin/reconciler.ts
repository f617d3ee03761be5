import type { Logger } from 'pino';
import type { Config, ScoringSettings } from '../config.js';
import { isEdgeError, ErrorCodes, EdgeError } from '../errors.js';
import {
  effectiveScoring,
  effectiveTelemetry,
  parseDesired,
  type DesiredCandidate,
  type DesiredModel,
  type DesiredState,
  type TelemetrySettings,
} from './desired.js';
import type { DesiredCapture } from '../capture/settings.js';
import type { DesiredDrift } from '../drift/settings.js';
import type { ModelManager } from '../models/manager.js';
import type { ReportedProperties } from './reported.js';

/** Failures worth retrying when the same desired version is seen again (e.g. after a reconnect). */
const RETRIABLE = new Set<string>([
  ErrorCodes.MODEL_DOWNLOAD_FAILED,
  ErrorCodes.STORAGE_FAILED,
  ErrorCodes.IOTHUB_TIMEOUT,
]);

/** First retry of a change that failed for a retriable reason; doubled per failure up to the max. */
const RETRY_INITIAL_MS = 10_000;
const RETRY_MAX_MS = 300_000;

export interface ReconcilerDeps {
  config: Readonly<Config>;
  manager: ModelManager;
  reported: ReportedProperties;
  logger: Logger;
  /** Applies telemetry settings to the upstream publisher. */
  onTelemetry: (settings: TelemetrySettings) => void;
  /** Starts, changes or ends the shadow trial (README, "Shadow trial"). */
  onCandidate?: (candidate: DesiredCandidate | undefined, settings: ScoringSettings) => void;
  /** Applies the desired `capture` block (undefined: the defaults, capture off). */
  onCapture?: (desired: DesiredCapture | undefined) => void;
  /** Applies the desired `drift` block (undefined: the defaults). */
  onDrift?: (desired: DesiredDrift | undefined) => void;
  /** Applies the desired `layouts` block (undefined: no layouts from the twin). */
  onLayouts?: (desired: Record<string, unknown> | undefined) => void;
  /** Delay before the first retry of a retriable failure (MODEL_RETRY_MS; doubles up to 5 min). */
  retryInitialMs?: number;
}

/**
 * The desired-state reconciler, shared by the module twin and the standalone desired-properties
 * file. It receives whole desired documents, validates them (a bad one is reported with its code
 * and changes nothing), and drives the model manager towards them. The latest version wins: the
 * manager cancels an obsolete download when a newer document arrives.
 */
export class DesiredStateReconciler {
  private lastVersion = -Infinity;
  private applied: DesiredState | undefined;
  private scoring: ScoringSettings;
  private pending: Promise<void> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs: number;
  private closed = false;
  private started = false;
  /**
   * A candidate promoted by the `promote` direct method. It keeps serving while the twin's `model`
   * stays the one it replaced (`over`); any other twin model ends the override (README, "Shadow
   * trial": promotion is then made permanent by a twin change).
   */
  private promoted: { over: string | undefined; model: DesiredModel } | undefined;
  /** The newest document that arrived before start(); handled at start. */
  private early: { doc: Record<string, unknown>; version: number } | undefined;

  constructor(private readonly deps: ReconcilerDeps) {
    this.scoring = effectiveScoring(deps.config, {});
    this.retryDelayMs = this.firstRetryDelayMs;
  }

  private get firstRetryDelayMs(): number {
    return this.deps.retryInitialMs ?? RETRY_INITIAL_MS;
  }

  /** The scoring settings in force (environment overridden by the last valid desired block). */
  get effectiveScoring(): ScoringSettings {
    return this.scoring;
  }

  /** Resolves once the latest model change has finished (for tests and shutdown). */
  settled(): Promise<void> {
    return this.pending;
  }

  /**
   * Publishes the initial effective settings, then handles the newest desired document that came
   * before start (IoT Hub connects in the background while the last good model loads, and a
   * change must not race that load).
   */
  start(): void {
    this.deps.reported.set('scoring', this.scoring);
    this.deps.reported.set('telemetry', effectiveTelemetry({}));
    this.started = true;
    const early = this.early;
    this.early = undefined;
    if (early) void this.onDesired(early.doc, early.version);
  }

  /**
   * Handles a whole desired document. `version` is the twin's `$version` (or a counter for the
   * file); a document not newer than the last one handled is ignored unless its model change
   * failed for a reason that a retry may fix.
   */
  onDesired(doc: Record<string, unknown>, version: number): Promise<void> {
    const { reported, logger } = this.deps;
    if (!this.started) {
      if (!this.early || version >= this.early.version) this.early = { doc, version };
      return this.pending;
    }
    if (version <= this.lastVersion) {
      if (!this.retriable() || !this.applied) return this.pending;
      logger.info({ component: 'twin', version }, 'retrying the failed model change');
      return this.apply(this.applied, true);
    }
    this.lastVersion = version;
    this.retryDelayMs = this.firstRetryDelayMs;
    let state: DesiredState;
    try {
      state = parseDesired(doc);
    } catch (err) {
      this.reject(isEdgeError(err) ? err : new EdgeError(ErrorCodes.DESIRED_INVALID, String(err)), version);
      return this.pending;
    }
    reported.set('desired', { version, status: 'applied', lastError: null });
    this.applied = state;
    return this.apply(state, false);
  }

  /** Reports a desired document that could not be used; the current state stays in force. */
  reject(err: EdgeError, version: number): void {
    this.lastVersion = Math.max(this.lastVersion, version);
    this.deps.logger.warn(
      { component: 'twin', version, code: err.code, reason: err.message },
      'desired properties rejected; nothing changed',
    );
    this.deps.reported.set('desired', {
      version,
      status: 'rejected',
      lastError: { code: err.code, message: err.message, at: new Date().toISOString() },
    });
  }

  private apply(state: DesiredState, force: boolean): Promise<void> {
    const { reported, manager, onTelemetry } = this.deps;
    this.scoring = effectiveScoring(this.deps.config, state.scoring);
    const telemetry = effectiveTelemetry(state.telemetry);
    reported.set('scoring', this.scoring);
    reported.set('telemetry', telemetry);
    onTelemetry(telemetry);
    this.deps.onCapture?.(state.capture);
    this.deps.onDrift?.(state.drift);
    this.deps.onLayouts?.(state.layouts);
    this.deps.onCandidate?.(state.candidate, this.scoring);
    this.pending = manager
      .apply(this.modelFor(state), this.scoring, { force })
      .then(() => this.scheduleRetry(state));
    return this.pending;
  }

  /** The model to serve for `state`: the twin's, unless a promoted candidate overrides it. */
  private modelFor(state: DesiredState): DesiredModel | undefined {
    if (this.promoted && state.model?.sha256 === this.promoted.over) return this.promoted.model;
    this.promoted = undefined;
    return state.model;
  }

  /**
   * Direct method `promote`: makes `model` (the shadow candidate) the active model through the
   * normal swap. Resolves true when it serves; on failure the previous model keeps serving.
   */
  async promote(model: DesiredModel): Promise<boolean> {
    const promoted = { over: this.applied?.model?.sha256, model };
    this.promoted = promoted;
    this.pending = this.deps.manager.apply(model, this.scoring);
    await this.pending;
    const status = this.deps.manager.status;
    const ok = status.status === 'active' && status.sha256 === model.sha256.toLowerCase();
    if (!ok && this.promoted === promoted) this.promoted = undefined;
    return ok;
  }

  /** Whether the last model change failed for a reason a retry may fix (disk full, network). */
  private retriable(): boolean {
    const last = this.deps.manager.status;
    return last.status === 'failed' && !!last.lastError && RETRIABLE.has(last.lastError.code);
  }

  /**
   * A change that failed for a retriable reason is tried again on its own, with backoff (10 s
   * doubling to 5 min), until it succeeds or a newer desired document replaces it: a line should
   * not wait for a twin event after the disk got space again or the model server came back.
   */
  private scheduleRetry(state: DesiredState): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (!this.retriable()) {
      this.retryDelayMs = this.firstRetryDelayMs;
      return;
    }
    if (this.closed) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(delay * 2, RETRY_MAX_MS);
    this.deps.logger.info(
      { component: 'twin', retryInMs: delay, code: this.deps.manager.status.lastError?.code },
      'the model change failed; retrying later',
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed || this.applied !== state || !this.retriable()) return;
      this.deps.logger.info({ component: 'twin' }, 'retrying the failed model change');
      void this.apply(state, true);
    }, delay);
    this.retryTimer.unref();
  }

  /** Stops retrying (shutdown). */
  stop(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Direct method `reloadModel`: rebuilds the engine for the current desired state. */
  reloadModel(): Promise<void> {
    const model = this.applied ? this.modelFor(this.applied) : this.promoted?.model;
    this.pending = this.deps.manager.apply(model, this.scoring, { force: true });
    return this.pending;
  }
}
