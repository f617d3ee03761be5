import { setTimeout as delay } from 'node:timers/promises';
import azureIotDevice, { type Message } from 'azure-iot-device';
import type { Logger } from 'pino';
import { Waker } from '../util/waker.js';
import type { DriftEvent, LifecycleEvent } from './events.js';
import type { Metrics } from './metrics.js';
import type { TelemetrySettings } from './settings.js';
import { OUTPUTS, type Batch, type Output, type TelemetryBuffer } from './buffer.js';
import { batched } from './item.js';

/** IoT Hub and edgeHub refuse messages over 256 KiB, properties included. */
export const MAX_MESSAGE_BYTES = 262_144;
/** Room kept for the property bag and system properties of a message. */
const PROPERTY_RESERVE = 4096;
const MAX_BODY = MAX_MESSAGE_BYTES - PROPERTY_RESERVE;

/** What the publisher needs of the IoT Hub connection. */
export interface OutputSender {
  readonly state: string;
  sendOutputEvent(output: string, message: Message, timeoutMs: number): Promise<void>;
}

/** A scored frame as it travels upstream. */
export interface FrameResult {
  frameId: string;
  cameraId: string | null;
  model: { name: string; version: string };
  defect: boolean;
  classification?: { label: string; score: number }[];
  detections?: {
    label: string;
    score: number;
    box: { x: number; y: number; width: number; height: number };
  }[];
  /** Anomaly models: the image score, its threshold and the defect regions (no map upstream). */
  anomaly?: {
    score: number;
    threshold: number;
    regions: { box: { x: number; y: number; width: number; height: number }; area: number; peak: number }[];
  };
  /** A board scored by regions (README, "Board layouts"): how many, and the defective ones. */
  board?: {
    layout: string | null;
    regions: number;
    defectiveRegions: { id: string; ref?: string; label?: string; score?: number }[];
  };
  totalMs: number;
  at: string;
}

export interface PublisherOptions {
  /** The bounded buffer; exposed so start-up can restore what a previous process journaled. */
  buffer: TelemetryBuffer;
  metrics: Metrics;
  logger: Logger;
  settings: TelemetrySettings;
  sendTimeoutMs: number;
  /** Upper bound on messages per second, so draining a backlog does not trip IoT Hub throttling. */
  maxMessagesPerSec: number;
  /** Extra counters for `stats` owned by other components. */
  /** Figures other components add to `stats`; `sections` are merged in by name (e.g. `candidate`). */
  statsSource: () => { queueRejections: number; sections?: Record<string, unknown> };
}

/**
 * The upstream publisher for the `results`, `events` and `stats` outputs. Producing never waits
 * on the network: items go to the bounded buffer, and one sender loop batches them into messages
 * (results by count, size and time, grouped by defect flag and model version so the routing
 * properties hold for every result in a message) and sends them while IoT Hub is connected,
 * paced to `maxMessagesPerSec`.
 */
export class TelemetryPublisher {
  private settings: TelemetrySettings;
  private sender: OutputSender | undefined;
  private loop: Promise<void> | undefined;
  private readonly waker = new Waker();
  private stopped = false;
  private statsTimer: NodeJS.Timeout | undefined;
  private window = {
    frames: 0,
    defects: 0,
    regions: 0,
    defectiveRegions: 0,
    labels: new Map<string, number>(),
    latencies: [] as number[],
    since: Date.now(),
  };
  private lastRejections = 0;
  private lastDropped = 0;

  readonly buffer: TelemetryBuffer;

  constructor(private readonly opts: PublisherOptions) {
    this.buffer = opts.buffer;
    this.settings = opts.settings;
    for (const o of OUTPUTS) {
      opts.metrics.telemetryBuffer.set({ output: o }, 0);
      opts.metrics.telemetryProduced.inc({ output: o }, 0);
      opts.metrics.telemetryDelivered.inc({ output: o }, 0);
      opts.metrics.telemetryDropped.inc({ output: o }, 0);
    }
    opts.metrics.telemetryBufferCapacity.set(opts.buffer.capacity);
  }

  /** Restores what a previous process journaled; restored items count as produced by this one. */
  async restore(): Promise<void> {
    await this.opts.buffer.load();
    for (const o of OUTPUTS) {
      const restored = this.opts.buffer.account(o).produced;
      if (restored > 0) this.opts.metrics.telemetryProduced.inc({ output: o }, restored);
    }
    this.updateGauges();
  }

  setSettings(settings: TelemetrySettings): void {
    const restartStats = settings.statsIntervalSec !== this.settings.statsIntervalSec;
    this.settings = settings;
    if (restartStats && this.statsTimer) this.scheduleStats();
    this.kick();
  }

  /** Connection up: sending resumes; undefined: items wait in the buffer. */
  setSender(sender: OutputSender | undefined): void {
    this.sender = sender;
    this.kick();
  }

  start(): void {
    this.loop ??= this.run();
    this.scheduleStats();
  }

  private scheduleStats(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = setInterval(() => this.emitStats(), this.settings.statsIntervalSec * 1000);
    this.statsTimer.unref();
  }

  /** Queues an item; `body` is serialised once here (an already serialised string is kept as is). */
  private produce(
    output: Output,
    group: string,
    properties: Record<string, string>,
    body: object | string,
  ): void {
    const json = typeof body === 'string' ? body : JSON.stringify(body);
    this.opts.buffer.push({
      output,
      group,
      properties: { type: output, ...properties },
      json,
      bytes: Buffer.byteLength(json),
      producedAt: Date.now(),
    });
    this.opts.metrics.telemetryProduced.inc({ output });
    this.updateGauges();
    if (output !== 'results' || this.opts.buffer.size >= this.settings.maxBatchMessages) this.kick();
  }

  /** Records a scored frame; filtered by `telemetry.results` (all, defects, none). */
  result(r: FrameResult): void {
    const w = this.window;
    w.frames++;
    if (r.defect) w.defects++;
    if (r.board) {
      w.regions += r.board.regions;
      w.defectiveRegions += r.board.defectiveRegions.length;
    }
    const labels =
      r.detections?.map((d) => d.label) ?? (r.classification?.[0] ? [r.classification[0].label] : []);
    for (const l of labels) w.labels.set(l, (w.labels.get(l) ?? 0) + 1);
    if (w.latencies.length < 100_000) w.latencies.push(r.totalMs);
    const mode = this.settings.results;
    if (mode === 'none' || (mode === 'defects' && !r.defect)) return;
    const group = `${String(r.defect)}|${r.model.version}`;
    this.produce('results', group, { defect: String(r.defect), modelVersion: r.model.version }, fitResult(r));
  }

  event(
    e: LifecycleEvent | DriftEvent | { event: 'daemon-started' | 'daemon-stopping'; [k: string]: unknown },
  ): void {
    this.produce('events', 'events', { event: e.event }, { ...e, at: new Date().toISOString() });
  }

  /**
   * A frame kept for retraining (README, "Capture for retraining"): `{id, frameId, cameraId,
   * reason, model {name, version}, blob, at}`, one message each, so the ML side learns of it at once.
   */
  capture(c: { id: string; reason: string; model: { version: string } }): void {
    this.produce('captures', 'captures', { reason: c.reason, modelVersion: c.model.version }, c);
  }

  /** Builds and queues a stats snapshot of the interval since the last one. */
  emitStats(): void {
    const w = this.window;
    const now = Date.now();
    const seconds = Math.max(0.001, (now - w.since) / 1000);
    const sorted = [...w.latencies].sort((a, b) => a - b);
    const pct = (p: number): number | null =>
      sorted.length
        ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 1000) / 1000
        : null;
    const source = this.opts.statsSource();
    const rejections = source.queueRejections;
    const dropped = OUTPUTS.reduce((sum, o) => sum + this.opts.buffer.account(o).dropped, 0);
    const results = this.opts.buffer.account('results');
    this.produce(
      'stats',
      'stats',
      {},
      {
        from: new Date(w.since).toISOString(),
        to: new Date(now).toISOString(),
        frames: w.frames,
        defects: w.defects,
        regions: w.regions,
        defectiveRegions: w.defectiveRegions,
        labels: Object.fromEntries(w.labels),
        latencyMs: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99) },
        framesPerSec: Math.round((w.frames / seconds) * 100) / 100,
        queueRejections: rejections - this.lastRejections,
        telemetryDrops: dropped - this.lastDropped,
        telemetry: { results },
        ...source.sections,
      },
    );
    this.lastRejections = rejections;
    this.lastDropped = dropped;
    this.window = {
      frames: 0,
      defects: 0,
      regions: 0,
      defectiveRegions: 0,
      labels: new Map(),
      latencies: [],
      since: now,
    };
  }

  private kick(): void {
    this.waker.wake();
  }

  private sleep(ms: number): Promise<void> {
    return this.waker.sleep(ms);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const sent = await this.sendOne();
      if (sent === 'sent') {
        // Pacing is a hard bound: a kick must not cut it short, or a backlog drains in a burst.
        await delay(1000 / this.opts.maxMessagesPerSec);
      } else if (sent === 'failed') {
        // A hard backoff too: new items must not turn a failing link into a tight retry loop.
        await delay(2000);
      } else {
        await this.sleep(this.settings.flushIntervalMs);
      }
    }
  }

  /** Sends the next message when one is due: 'idle' when nothing is due or no connection. */
  private async sendOne(timeoutMs = this.opts.sendTimeoutMs): Promise<'sent' | 'failed' | 'idle'> {
    const sender = this.sender;
    if (!sender || sender.state !== 'connected') return 'idle';
    const { buffer } = this.opts;
    const batch = buffer.peekBatch(this.settings.maxBatchMessages, MAX_BODY - 64);
    const first = batch?.items[0];
    if (!batch || !first) return 'idle';
    const due =
      first.output !== 'results' ||
      batch.items.length >= this.settings.maxBatchMessages ||
      Date.now() - first.producedAt >= this.settings.flushIntervalMs ||
      this.stopped;
    if (!due) return 'idle';
    const message = this.toMessage(batch);
    try {
      // On disk before it leaves: after a crash the same items go out under the same messageId.
      await buffer.sending(batch);
      await sender.sendOutputEvent(first.output, message, timeoutMs);
      // Items dropped while the message was in flight stay counted as dropped, not delivered.
      const counted = buffer.delivered(batch);
      this.opts.metrics.telemetryMessages.inc({ output: first.output, outcome: 'sent' });
      this.opts.metrics.telemetryDelivered.inc({ output: first.output }, counted);
      this.updateGauges();
      return 'sent';
    } catch (err) {
      this.opts.metrics.telemetryMessages.inc({ output: first.output, outcome: 'failed' });
      this.opts.logger.warn(
        { component: 'telemetry', output: first.output, items: batch.items.length, err },
        'send failed; will retry',
      );
      return 'failed';
    }
  }

  private toMessage(batch: Batch): Message {
    const first = batch.items[0]!;
    const body = batched(first.output)
      ? `{"results":[${batch.items.map((b) => b.json).join(',')}]}`
      : first.json;
    const message = new azureIotDevice.Message(Buffer.from(body));
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    // The same for the same items, across resends and restarts, so a consumer can de-duplicate.
    message.messageId = batch.id;
    for (const [k, v] of Object.entries(first.properties)) message.properties.add(k, v);
    return message;
  }

  private updateGauges(): void {
    for (const o of OUTPUTS)
      this.opts.metrics.telemetryBuffer.set({ output: o }, this.opts.buffer.account(o).pending);
  }

  /** Tries to deliver what is pending until `deadlineMs`; the rest stays in the journal. */
  async stop(deadlineMs: number): Promise<void> {
    if (this.statsTimer) clearInterval(this.statsTimer);
    const end = Date.now() + deadlineMs;
    this.stopped = true;
    this.kick();
    // A send in flight may hang until its own timeout (the SDK retries while it reconnects):
    // wait for it only until the deadline; its items are still pending, in the journal.
    let timer: NodeJS.Timeout | undefined;
    const inFlight = await Promise.race([
      this.loop?.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), deadlineMs))),
    ]);
    clearTimeout(timer);
    while (!inFlight && Date.now() < end && this.opts.buffer.size > 0) {
      const r = await this.sendOne(Math.max(1, end - Date.now()));
      if (r !== 'sent') break;
    }
    await this.opts.buffer.close();
  }
}

/**
 * A result serialised to fit one message on its own: raw outputs never go upstream, long detection
 * lists are cut (and marked `truncated`).
 */
function fitResult(r: FrameResult): string {
  const json = JSON.stringify(r);
  if (Buffer.byteLength(json) <= MAX_BODY - 64) return json;
  const detections = [...(r.detections ?? [])];
  let cut = JSON.stringify({ ...r, detections, truncated: true });
  while (detections.length > 0 && Buffer.byteLength(cut) > MAX_BODY - 64) {
    detections.length = Math.floor(detections.length / 2);
    cut = JSON.stringify({ ...r, detections, truncated: true });
  }
  return cut;
}
