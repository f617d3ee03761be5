import type { Logger } from 'pino';
import type { Metrics } from '../telemetry/metrics.js';
import type { HealthSample } from './types.js';

/** The scoring routes whose latency the health view charts. */
const SCORE_ROUTES = new Set(['/v1/score', '/score']);

export interface HealthSamplerOptions {
  metrics: Metrics;
  logger: Logger;
  /** Sampling interval, milliseconds. */
  intervalMs: number;
  /** Samples kept (intervalMs × keep is the charts' time span). */
  keep: number;
}

/** The counters one sample differs from the previous one by. */
interface Totals {
  frames: number;
  defects: number;
  rejected: number;
  /** Cumulative latency histogram of the scoring routes: upper bound (seconds) → count. */
  buckets: Map<number, number>;
}

/**
 * A quantile of the observations between two cumulative histograms, interpolated linearly
 * inside the bucket it falls in, as Prometheus' histogram_quantile() does. Null without any.
 */
export function quantileBetween(
  before: Map<number, number>,
  after: Map<number, number>,
  q: number,
): number | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const upper = bounds[i]!;
    const count = counts[i]!;
    if (count >= rank) {
      if (!Number.isFinite(upper)) return lower;
      return lower + ((upper - lower) * (rank - below)) / Math.max(1, count - below);
    }
    lower = upper;
    below = count;
  }
  return lower;
}

/**
 * Samples the daemon's own Prometheus counters every `intervalMs` for the console's health
 * charts (frames/s, defect rate, latency p50/p99, queue depth, 429s, IoT Hub, telemetry backlog).
 * It reads the same registry that /metrics serves, so the charts and a scrape agree.
 */
export class HealthSampler {
  private readonly samples: HealthSample[] = [];
  private previous: Totals | undefined;
  private previousAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: HealthSamplerOptions) {}

  get history(): HealthSample[] {
    return [...this.samples];
  }

  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  async sample(): Promise<void> {
    try {
      const now = Date.now();
      const totals = await this.totals();
      const { metrics } = this.opts;
      const [depth, connected, backlog] = await Promise.all([
        metrics.queueDepth.get(),
        metrics.iothubConnected.get(),
        metrics.telemetryBuffer.get(),
      ]);
      const prev = this.previous;
      this.previous = totals;
      const seconds = (now - this.previousAt) / 1000;
      this.previousAt = now;
      if (!prev || seconds <= 0) return;
      const frames = totals.frames - prev.frames;
      this.samples.push({
        t: now,
        framesPerSec: frames / seconds,
        defectRate: frames > 0 ? (totals.defects - prev.defects) / frames : null,
        p50Ms: ms(quantileBetween(prev.buckets, totals.buckets, 0.5)),
        p99Ms: ms(quantileBetween(prev.buckets, totals.buckets, 0.99)),
        queueDepth: depth.values.reduce((s, v) => s + v.value, 0),
        rejectedPerSec: (totals.rejected - prev.rejected) / seconds,
        iothubConnected: connected.values.some((v) => v.value > 0),
        telemetryBacklog: backlog.values.reduce((s, v) => s + v.value, 0),
      });
      if (this.samples.length > this.opts.keep) this.samples.shift();
    } catch (err) {
      this.opts.logger.warn({ component: 'console', err }, 'health sample failed');
    }
  }

  private async totals(): Promise<Totals> {
    const { metrics } = this.opts;
    const [frames, rejected, latency] = await Promise.all([
      metrics.frames.get(),
      metrics.queueRejections.get(),
      metrics.requestDuration.get(),
    ]);
    const buckets = new Map<number, number>();
    for (const v of latency.values) {
      if (!v.metricName?.endsWith('_bucket') || !SCORE_ROUTES.has(String(v.labels.route))) continue;
      const le = (v.labels as Record<string, string | number | undefined>).le;
      const bound = le === '+Inf' ? Infinity : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + v.value);
    }
    return {
      frames: frames.values.reduce((s, v) => s + v.value, 0),
      defects: frames.values
        .filter((v) => String(v.labels.defect) === 'true')
        .reduce((s, v) => s + v.value, 0),
      rejected: rejected.values.reduce((s, v) => s + v.value, 0),
      buckets,
    };
  }
}

const ms = (seconds: number | null): number | null => (seconds === null ? null : seconds * 1000);
