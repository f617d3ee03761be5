import type { Logger } from 'pino';

/** Where reported properties go: IoT Hub, or a file in standalone mode. */
export interface ReportedSink {
  /** Sends a patch (merge semantics). Throws when it cannot; the reporter resends later. */
  send(patch: Record<string, unknown>): Promise<void>;
}

/**
 * Reported properties, throttled: changes are merged into one pending patch and sent at most once
 * per `minIntervalMs`, so a burst of status changes costs one twin update, and the last state is
 * always the one that arrives. A failed send keeps the patch pending and retries; `resendAll()`
 * (after a reconnect) sends the whole document again.
 */
export class ReportedProperties {
  private doc: Record<string, unknown> = {};
  private pending: Record<string, unknown> = {};
  private timer: NodeJS.Timeout | undefined;
  private lastSent = 0;
  private sending: Promise<void> | undefined;
  private stopped = false;
  private sink: ReportedSink | undefined;

  constructor(private readonly opts: { minIntervalMs: number; retryMs: number; logger: Logger }) {}

  /** The full document as the daemon currently reports it. */
  get document(): Record<string, unknown> {
    return structuredClone(this.doc);
  }

  /**
   * A new sink (a new IoT Hub client) starts afresh: the retry delay after the old one's failure
   * does not hold it back, and the whole document is sent at once.
   */
  attach(sink: ReportedSink | undefined): void {
    this.sink = sink;
    if (!sink) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.lastSent = 0;
    this.resendAll();
  }

  /** Replaces one top-level section (model, scoring, telemetry, daemon, desired). */
  set(section: string, value: unknown): void {
    this.doc[section] = value;
    this.pending[section] = value;
    this.schedule();
  }

  resendAll(): void {
    this.pending = { ...this.doc };
    this.schedule();
  }

  private schedule(delay?: number): void {
    if (this.stopped || this.timer || this.sending || !this.sink) return;
    const wait = delay ?? Math.max(0, this.lastSent + this.opts.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sending = this.flush().finally(() => {
        this.sending = undefined;
        if (Object.keys(this.pending).length > 0) this.schedule();
      });
    }, wait);
  }

  private async flush(): Promise<void> {
    const sink = this.sink;
    if (!sink || Object.keys(this.pending).length === 0) return;
    const patch = this.pending;
    this.pending = {};
    this.lastSent = Date.now();
    try {
      await sink.send(patch);
    } catch (err) {
      // Newer values set meanwhile win over the failed patch's.
      this.pending = { ...patch, ...this.pending };
      this.opts.logger.warn({ component: 'twin', err }, 'reported properties not sent; will retry');
      // The retry delay belongs to the sink that failed; one attached meanwhile sends at once.
      if (this.sink === sink) this.lastSent = Date.now() + this.opts.retryMs - this.opts.minIntervalMs;
    }
  }

  /** Sends what is pending (bounded by the sink's own deadline), then stops. */
  async stop(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    await this.sending;
    if (!this.stopped) {
      this.stopped = true;
      await this.flush();
    }
  }
}
