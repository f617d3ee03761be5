import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { ScoringSettings } from '../config.js';
import { EdgeError, ErrorCodes, isEdgeError } from '../errors.js';
import type { ModelFetcher } from '../models/fetcher.js';
import { manifestOf, type DesiredModel } from '../models/published-model.js';
import type { ModelStore } from '../models/store.js';
import type { ScoredFrame, ScoringEngine, ScoreOutcome } from '../scoring/engine.js';
import type { Metrics } from '../telemetry/metrics.js';
import { ShadowComparison, type ComparisonFigures } from './compare.js';

/** A desired candidate: a model block plus the share of frames it scores. */
export interface CandidateModel extends DesiredModel {
  sampleRate: number;
}

export type CandidateStatus =
  'downloading' | 'verifying' | 'loading' | 'warming' | 'active' | 'failed' | 'promoted';

/** The reported `candidate` (README, "Shadow trial"). */
export interface CandidateReport extends ComparisonFigures {
  name: string | null;
  version: string | null;
  sha256: string;
  status: CandidateStatus;
  sampleRate: number;
  /** Frames the candidate did not score because the line was busy or its own queue was full. */
  shed: number;
  /** When the candidate began scoring (its figures count from here); null until then. */
  since: string | null;
  lastError: { code: string; message: string; at: string } | null;
}

export interface ShadowTrialDeps {
  engine: ScoringEngine;
  store: ModelStore;
  fetcher: ModelFetcher;
  metrics: Metrics;
  logger: Logger;
  /** The reported `candidate`; null once a trial ends. */
  onReport: (report: CandidateReport | null) => void;
  /** How often the running figures are reported while a trial runs. */
  reportIntervalMs: number;
}

const sha = (v: string): string => v.toLowerCase();
const keyOf = (c: CandidateModel): string => {
  const { sampleRate: _rate, ...model } = c;
  return `${sha(c.sha256)}|${JSON.stringify(manifestOf(model))}`;
};

const spentMs = (t: ScoreOutcome['timing']): number =>
  t.queueMs + t.preprocessMs + t.inferenceMs + t.postprocessMs;

/**
 * A shadow trial (docs/architecture.md, "Where a new feature goes"): the desired `candidate` is
 * downloaded, verified and warmed like the active model, then holds the engine's `candidate`
 * role. It subscribes to the scored-frame stream, so it only ever sees frames whose answer has
 * already been sent, and scores a share of them with `engine.scoreAs('candidate', …)`.
 *
 * It never competes with the line: a frame is shed (counted, never scored) when the active runtime
 * is busy (a frame waits for it, or all its workers are running), or when the candidate's own
 * small queue is full. The candidate
 * runs with one worker and a queue of `maxBatchSize` (at least 2), whatever the line's settings.
 */
export class ShadowTrial {
  /** Keeps the candidate model in the cache while the trial uses it (the active model prunes it). */
  private unpin: (() => void) | undefined;
  private key: string | undefined;
  private model: CandidateModel | undefined;
  private op: { controller: AbortController; done: Promise<void> } | undefined;
  private comparison = new ShadowComparison();
  private current: CandidateReport | null = null;
  private offered = 0;
  private shed = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly deps: ShadowTrialDeps) {}

  /** The reported `candidate`, with the figures as they are now; null when no trial runs. */
  get report(): CandidateReport | null {
    if (!this.current) return null;
    return { ...this.current, ...this.comparison.figures(), shed: this.shed };
  }

  /** The candidate's model block while it is warmed and scoring (what `promote` swaps in). */
  promotable(): DesiredModel | undefined {
    if (this.current?.status !== 'active' || !this.model) return undefined;
    const { sampleRate: _rate, ...model } = this.model;
    return model;
  }

  /** Starts reporting the running figures. */
  start(): void {
    this.timer = setInterval(() => this.publish(), this.deps.reportIntervalMs);
    this.timer.unref();
  }

  /**
   * Makes the trial run `candidate` (undefined ends it). A change of the sample rate alone keeps
   * the runtime and the figures; a new model restarts both. Resolves when the candidate is warm,
   * failed or superseded; never throws.
   */
  apply(candidate: CandidateModel | undefined, settings: ScoringSettings): Promise<void> {
    const key = candidate ? keyOf(candidate) : undefined;
    if (key === this.key) {
      if (candidate && this.current) {
        this.model = candidate;
        this.current = { ...this.current, sampleRate: candidate.sampleRate };
        this.publish();
      }
      return this.op?.done ?? Promise.resolve();
    }
    this.key = key;
    this.model = candidate;
    const previous = this.op;
    previous?.controller.abort();
    const controller = new AbortController();
    const done = (async () => {
      await previous?.done;
      if (controller.signal.aborted || this.stopped) return;
      await this.load(candidate, settings, controller.signal);
    })();
    this.op = { controller, done };
    return done;
  }

  private async load(
    candidate: CandidateModel | undefined,
    settings: ScoringSettings,
    signal: AbortSignal,
  ): Promise<void> {
    const { engine, store, fetcher, logger } = this.deps;
    await engine.release('candidate');
    this.unpin?.();
    this.unpin = candidate ? store.pin(candidate.sha256) : undefined;
    this.comparison = new ShadowComparison();
    this.offered = 0;
    this.shed = 0;
    this.deps.metrics.shadowAgreement.reset();
    if (!candidate) {
      this.current = null;
      this.deps.onReport(null);
      logger.info({ component: 'shadow' }, 'shadow trial ended');
      return;
    }
    const { sampleRate: _rate, ...model } = candidate;
    const manifest = manifestOf(model);
    this.current = {
      name: candidate.name ?? null,
      version: candidate.version ?? null,
      sha256: sha(candidate.sha256),
      status: 'downloading',
      sampleRate: candidate.sampleRate,
      since: null,
      lastError: null,
      ...this.comparison.figures(),
      shed: 0,
    };
    const tmp = store.tempPath();
    try {
      if (!(await store.has(candidate.sha256))) {
        this.setStatus('downloading');
        await fetcher.fetch({
          url: candidate.url,
          sha256: candidate.sha256,
          ...(candidate.sizeBytes ? { sizeBytes: candidate.sizeBytes } : {}),
          dest: tmp,
          signal,
        });
        this.setStatus('verifying');
        await store.put(tmp, sha(candidate.sha256), manifest);
      }
      if (signal.aborted) throw new EdgeError(ErrorCodes.CANCELLED, 'superseded by a newer candidate');
      await engine.activate({
        modelPath: store.modelPath(sha(candidate.sha256)),
        manifest,
        role: 'candidate',
        signal,
        settings: {
          ...settings,
          workers: 1,
          maxQueue: Math.max(2, settings.maxBatchSize),
        },
        onPhase: (phase) => this.setStatus(phase),
      });
      this.current = { ...this.current, status: 'active', since: new Date().toISOString() };
      this.publish();
      logger.info(
        { component: 'shadow', modelVersion: candidate.version, sha256: candidate.sha256 },
        'shadow trial started',
      );
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      const e = isEdgeError(err)
        ? err
        : new EdgeError(ErrorCodes.INTERNAL, err instanceof Error ? err.message : String(err));
      if (e.code === ErrorCodes.CANCELLED || signal.aborted) return;
      logger.error(
        { component: 'shadow', code: e.code, modelVersion: candidate.version, err },
        'candidate model failed; the line is unaffected',
      );
      this.current = {
        ...this.current,
        status: 'failed',
        lastError: { code: e.code, message: e.message, at: new Date().toISOString() },
      };
      this.publish();
    }
  }

  private setStatus(status: CandidateStatus): void {
    if (!this.current) return;
    this.current = { ...this.current, status };
    this.publish();
  }

  private publish(): void {
    const report = this.report;
    if (report) this.deps.onReport(report);
  }

  /**
   * The scored-frame subscriber. Returns at once: the candidate's scoring runs beside the stream,
   * bounded by the candidate's queue, so neither the stream nor the line ever waits for it.
   */
  onFrame(frame: ScoredFrame): void {
    const { engine, metrics } = this.deps;
    const model = this.model;
    if (this.current?.status !== 'active' || !model || frame.role !== 'active') return;
    if (frame.model.sha256 === sha(model.sha256)) return;
    // An exact share: frame k is taken when ⌊k·r⌋ steps up, so 0.25 takes every 4th frame.
    this.offered++;
    if (Math.floor(this.offered * model.sampleRate) === Math.floor((this.offered - 1) * model.sampleRate)) {
      metrics.shadowFrames.inc({ outcome: 'skipped' });
      return;
    }
    const active = engine.runtimeOf('active');
    if (active?.busy) {
      this.shedFrame('shed_busy');
      return;
    }
    const candidate = engine.runtimeOf('candidate');
    if (!candidate || candidate.depth >= candidate.settings.maxQueue) {
      this.shedFrame('shed_queue');
      return;
    }
    const comparison = this.comparison;
    const job = engine
      .scoreAs('candidate', frame.frame)
      .then((outcome) => {
        if (comparison !== this.comparison) return;
        const activeMs = spentMs(frame.timing);
        const candidateMs = spentMs(outcome.timing);
        const { flip } = comparison.add(frame.prediction, outcome.prediction, { activeMs, candidateMs });
        metrics.shadowFrames.inc({ outcome: 'compared' });
        if (flip)
          metrics.shadowFlips.inc({ direction: flip === 'okToDefect' ? 'ok_to_defect' : 'defect_to_ok' });
        metrics.shadowAgreement.set(comparison.agreement ?? 0);
        metrics.shadowLatency.observe({ role: 'active' }, activeMs / 1000);
        metrics.shadowLatency.observe({ role: 'candidate' }, candidateMs / 1000);
      })
      .catch((err: unknown) => {
        if (isEdgeError(err) && (err.code === ErrorCodes.QUEUE_FULL || err.code === ErrorCodes.NOT_READY)) {
          this.shedFrame('shed_queue');
          return;
        }
        metrics.shadowFrames.inc({ outcome: 'failed' });
        this.deps.logger.warn(
          { component: 'shadow', frameId: frame.frameId, err },
          'the candidate failed to score a frame',
        );
      })
      .finally(() => this.inFlight.delete(job));
    this.inFlight.add(job);
  }

  private shedFrame(outcome: 'shed_busy' | 'shed_queue'): void {
    this.shed++;
    this.deps.metrics.shadowFrames.inc({ outcome });
  }

  /** Resolves once the frames handed to the candidate so far are compared (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /**
   * The candidate was promoted to active: its runtime is released and the report keeps its final
   * figures with status `promoted` until the twin's `candidate` changes.
   */
  async promoted(): Promise<void> {
    if (!this.current) return;
    const final = this.report!;
    this.current = { ...final, status: 'promoted' };
    await this.idle();
    await this.deps.engine.release('candidate');
    this.deps.onReport({ ...final, status: 'promoted' });
  }

  /** Stops reporting, cancels a candidate load in progress and waits for frames in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.op?.controller.abort();
    await this.op?.done;
    await this.idle();
    this.publish();
  }
}
