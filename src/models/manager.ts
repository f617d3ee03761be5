import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { ScoringSettings } from '../config.js';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { PartialManifest } from '../scoring/manifest.js';
import type { ModelInfo } from '../scoring/model-runtime.js';
import type { LifecycleEvent } from '../telemetry/events.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { ModelFetcher } from './fetcher.js';
import { manifestOf, type DesiredModel } from './published-model.js';
import type { ModelStore } from './store.js';

export type { LifecycleEvent } from '../telemetry/events.js';

export type ModelStatus = 'downloading' | 'verifying' | 'loading' | 'warming' | 'active' | 'failed';

export interface LastError {
  code: string;
  message: string;
  at: string;
}

/** The reported `model` section (README, "Model lifecycle: the module twin"). */
export interface ModelReport {
  name: string | null;
  version: string | null;
  sha256: string | null;
  status: ModelStatus;
  executionProvider: string | null;
  loadedAt: string | null;
  previousVersion: string | null;
  lastError: LastError | null;
}

export interface ModelManagerDeps {
  engine: ScoringEngine;
  store: ModelStore;
  fetcher: ModelFetcher;
  metrics: Metrics;
  logger: Logger;
  /**
   * The model file served when the cache holds no last-known-good model: MODEL_PATH, or the
   * bundled demo model in standalone mode. Undefined when desired state comes from IoT Hub and
   * MODEL_PATH is not set: a line never gets answers from a model nobody deployed, so readiness
   * waits for the twin's model.
   */
  fallbackModelPath: string | undefined;
  onReport: (report: ModelReport) => void;
  onEvent: (event: LifecycleEvent) => void;
}

/** What the daemon serves: model identity + the manifest it was loaded with + scoring settings. */
interface Target {
  sha256: string;
  manifest: PartialManifest;
  settings: ScoringSettings;
  version: string | undefined;
  name: string | undefined;
  /** A model file outside the cache (MODEL_PATH or the bundled model); never downloaded. */
  path?: string;
}

const stable = (v: unknown): string =>
  JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === 'object' && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b)))
      : val,
  );

const keyOf = (t: Pick<Target, 'sha256' | 'manifest' | 'settings'>): string =>
  `${t.sha256}|${stable(t.manifest)}|${stable(t.settings)}`;

/** Why no model serves yet, while none does (GET /v1/model, the 503 of the scoring routes). */
const WAITING_FOR_TWIN =
  'waiting for the model the module twin names (no last known good model is cached, and the bundled demo model serves only when MODEL_PATH names it)';

/**
 * The model lifecycle: pull, verify, store, load, warm and swap; roll back to a cached version.
 * Every step that fails leaves the active model serving and is reported with its code. One
 * operation runs at a time; a newer desired state cancels the one in progress (its download is
 * aborted) and runs once it has unwound.
 *
 * It is the one owner of a model's status and last error: the twin's reported `model`, the direct
 * methods, GET /v1/model and the readiness answer all read them from here.
 */
export class ModelManager {
  private stopped = false;
  private waiting: string | undefined;
  private activeKey: string | undefined;
  private activeTarget: Target | undefined;
  private current: { controller: AbortController; done: Promise<void> } | undefined;
  private report: ModelReport = {
    name: null,
    version: null,
    sha256: null,
    status: 'loading',
    executionProvider: null,
    loadedAt: null,
    previousVersion: null,
    lastError: null,
  };

  constructor(private readonly deps: ModelManagerDeps) {}

  get status(): ModelReport {
    return { ...this.report };
  }

  /** Why the latest model change failed, while the previous model (if any) keeps serving. */
  get lastError(): LastError | null {
    return this.report.lastError;
  }

  /** Why no model serves yet, when that is by design rather than a failure. */
  get waitingReason(): string | undefined {
    return this.waiting;
  }

  /** True when no model serves because loading one failed (GET /v1/model's `failed` status). */
  get failedWithoutModel(): boolean {
    return this.report.status === 'failed' && !this.deps.engine.ready;
  }

  private setReport(patch: Partial<ModelReport>): void {
    this.report = { ...this.report, ...patch };
    this.deps.onReport(this.status);
  }

  private fail(err: EdgeError, target?: Partial<Target>): void {
    const lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
    this.deps.metrics.modelSwaps.inc({ outcome: err.code });
    this.deps.logger.error(
      { component: 'model', code: err.code, modelVersion: target?.version, sha256: target?.sha256, err },
      'model activation failed; the previous model keeps serving',
    );
    // The report keeps describing the model that serves; status and lastError tell about the attempt.
    this.setReport({ status: 'failed', lastError });
    this.deps.onEvent({
      event: 'failed',
      model: { name: target?.name, version: target?.version, sha256: target?.sha256 },
      error: { code: err.code, message: err.message },
    });
  }

  private activated(info: ModelInfo, target: Target, previous: string | null): void {
    this.waiting = undefined;
    this.activeKey = keyOf(target);
    this.activeTarget = target;
    this.setReport({
      name: info.manifest.name,
      version: info.manifest.version,
      sha256: info.sha256,
      status: 'active',
      executionProvider: info.executionProvider,
      loadedAt: info.loadedAt,
      previousVersion: previous,
      lastError: null,
    });
  }

  /**
   * The desired model is the one already serving (say, set back after a failed change): the
   * device is in the desired state, so the report says `active` again and forgets the failure.
   */
  private alreadyServing(): void {
    if (this.report.status === 'active' && this.report.lastError === null) return;
    this.deps.logger.info(
      { component: 'model', modelVersion: this.report.version },
      'the desired model is the one serving',
    );
    this.setReport({ status: 'active', lastError: null });
  }

  /**
   * Serves the last-known-good model from the cache, else the fallback model file, else waits for
   * the twin. Runs before IoT Hub is reachable, so a restarted line is scoring within seconds.
   * Aborting `signal` (a stop during start-up) cancels a load in progress.
   */
  async start(settings: ScoringSettings, signal?: AbortSignal): Promise<void> {
    const { store, engine, logger } = this.deps;
    const lkg = await store.lastKnownGood();
    if (signal?.aborted) return;
    if (lkg && (await store.has(lkg.sha256))) {
      try {
        const manifest = lkg.manifest;
        const info = await engine.activate({
          modelPath: store.modelPath(lkg.sha256),
          manifest,
          settings,
          ...(signal ? { signal } : {}),
        });
        this.activated(info, this.targetFor(lkg.sha256, manifest, settings), null);
        logger.info(
          { component: 'model', modelVersion: info.manifest.version, sha256: info.sha256 },
          'serving last known good model',
        );
        return;
      } catch (err) {
        if (signal?.aborted) return;
        logger.error(
          { component: 'model', err },
          'last known good model failed to load; trying the fallback model',
        );
      }
    }
    const fallback = this.deps.fallbackModelPath;
    if (!fallback) {
      this.waiting = WAITING_FOR_TWIN;
      logger.warn({ component: 'model' }, 'no model serves until the module twin names one');
      return;
    }
    try {
      logger.info({ component: 'model', modelPath: fallback }, 'loading the local model');
      const info = await engine.activate({ modelPath: fallback, settings, ...(signal ? { signal } : {}) });
      this.activated(info, { ...this.targetFor(info.sha256, {}, settings), path: fallback }, null);
    } catch (err) {
      if (signal?.aborted) return;
      this.fail(isEdgeError(err) ? err : new EdgeError(ErrorCodes.MODEL_LOAD_FAILED, String(err)));
    }
  }

  private targetFor(sha256: string, manifest: PartialManifest, settings: ScoringSettings): Target {
    return { sha256, manifest, settings, version: manifest.version, name: manifest.name };
  }

  /**
   * Makes the daemon serve `model` with `settings`. `model` undefined keeps the current model and
   * applies only the settings. Resolves when done, failed or superseded; never throws.
   */
  apply(
    model: DesiredModel | undefined,
    settings: ScoringSettings,
    opts: { force?: boolean } = {},
  ): Promise<void> {
    const target = model
      ? this.targetFor(model.sha256, manifestOf(model), settings)
      : this.activeTarget
        ? { ...this.activeTarget, settings }
        : undefined;
    if (!target) return Promise.resolve();
    if (!opts.force && this.activeKey === keyOf(target) && !this.current) {
      this.alreadyServing();
      return Promise.resolve();
    }
    return this.run((signal) => this.activate(target, model, signal, opts.force ?? false));
  }

  /** Swaps back to the previous version from the cache (no download). */
  rollback(): Promise<{ ok: boolean; version?: string; error?: { code: string; message: string } }> {
    let result: { ok: boolean; version?: string; error?: { code: string; message: string } } = { ok: false };
    const done = this.run(async () => {
      const prev = await this.deps.store.previous();
      if (!prev || !(await this.deps.store.has(prev.sha256))) {
        result = {
          ok: false,
          error: { code: ErrorCodes.NOT_FOUND, message: 'no previous model in the cache' },
        };
        return;
      }
      const from = this.report.version;
      const manifest = prev.manifest;
      const target = this.targetFor(
        prev.sha256,
        manifest,
        this.activeTarget?.settings ?? this.deps.engine.settings,
      );
      const ok = await this.activate(target, undefined, new AbortController().signal, true);
      if (ok) {
        this.deps.onEvent({
          event: 'rolled-back',
          model: { name: target.name, version: this.report.version ?? undefined, sha256: target.sha256 },
          previousVersion: from,
        });
        result = { ok: true, ...(this.report.version ? { version: this.report.version } : {}) };
      } else {
        result = { ok: false, ...(this.report.lastError ? { error: this.report.lastError } : {}) };
      }
    });
    return done.then(() => result);
  }

  /** Cancels the model change in progress and waits for it to unwind. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    const current = this.current;
    current?.controller.abort();
    await current?.done;
  }

  /** Runs `op` after cancelling and awaiting the operation in progress. */
  private run(op: (signal: AbortSignal) => Promise<unknown>): Promise<void> {
    const previous = this.current;
    previous?.controller.abort();
    const controller = new AbortController();
    if (this.stopped) controller.abort();
    const done = (async () => {
      await previous?.done;
      if (controller.signal.aborted) return;
      await op(controller.signal);
    })().finally(() => {
      if (this.current?.done === done) this.current = undefined;
    });
    this.current = { controller, done };
    return done;
  }

  private async activate(
    target: Target,
    desired: DesiredModel | undefined,
    signal: AbortSignal,
    force: boolean,
  ): Promise<boolean> {
    const { store, fetcher, engine, logger } = this.deps;
    if (!force && this.activeKey === keyOf(target)) {
      this.alreadyServing();
      return true;
    }
    const started = Date.now();
    const tmp = store.tempPath();
    try {
      if (!target.path && !(await store.has(target.sha256))) {
        if (!desired) throw new EdgeError(ErrorCodes.NOT_FOUND, `model ${target.sha256} is not in the cache`);
        this.setReport({ status: 'downloading' });
        logger.info(
          { component: 'model', modelVersion: target.version, sha256: target.sha256 },
          'downloading model',
        );
        await fetcher.fetch({
          url: desired.url,
          sha256: desired.sha256,
          ...(desired.sizeBytes ? { sizeBytes: desired.sizeBytes } : {}),
          dest: tmp,
          signal,
        });
        this.setReport({ status: 'verifying' });
        await store.put(tmp, target.sha256, target.manifest);
        this.deps.onEvent({
          event: 'downloaded',
          model: { name: target.name, version: target.version, sha256: target.sha256 },
          durationMs: Date.now() - started,
        });
      }
      if (signal.aborted) throw new EdgeError(ErrorCodes.CANCELLED, 'superseded by a newer desired state');
      const previous = this.report.status === 'active' || this.report.version ? this.report.version : null;
      const info = await engine.activate({
        modelPath: target.path ?? store.modelPath(target.sha256),
        manifest: target.manifest,
        settings: target.settings,
        onPhase: (phase) => this.setReport({ status: phase }),
      });
      if (signal.aborted) {
        // A newer state is queued: it will swap again; this one still served a moment, which is fine.
        logger.info(
          { component: 'model', modelVersion: info.manifest.version },
          'activated, but a newer desired state follows',
        );
      }
      // Only cached models become last known good; MODEL_PATH is served from where it is.
      if (!target.path) await store.markActive(target.sha256, info.manifest);
      await store
        .prune()
        .catch((err: unknown) => logger.warn({ component: 'model', err }, 'pruning the model cache failed'));
      this.activated(info, target, previous);
      this.deps.onEvent({
        event: 'activated',
        model: { name: info.manifest.name, version: info.manifest.version, sha256: info.sha256 },
        previousVersion: previous,
        durationMs: Date.now() - started,
      });
      return true;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      const e = isEdgeError(err)
        ? err
        : new EdgeError(ErrorCodes.INTERNAL, err instanceof Error ? err.message : String(err));
      if (e.code === ErrorCodes.CANCELLED) {
        logger.info(
          { component: 'model', modelVersion: target.version },
          'model change cancelled by a newer desired state',
        );
        return false;
      }
      this.fail(e, target);
      return false;
    }
  }
}
