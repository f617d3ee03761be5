import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'edge_scorer_';

/** Sampling interval of the event-loop delay monitor, ms. */
const LOOP_RESOLUTION_MS = 10;

/** Latency buckets from 0.5 ms to 10 s: inference on a GPU is sub-millisecond, a CPU CNN tens of ms. */
const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * The daemon's Prometheus metrics (README, "Metrics"). One instance per daemon, created in app.ts and
 * passed to the components; labels are closed sets (routes, outcomes, model labels from the
 * manifest) so their cardinality cannot explode.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: `${PREFIX}http_requests_total`,
    help: 'HTTP requests by route and outcome (status class or error code).',
    labelNames: ['route', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly requestDuration = new Histogram({
    name: `${PREFIX}http_request_duration_seconds`,
    help: 'HTTP request duration from first byte to answer, by route.',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly queueDuration = new Histogram({
    name: `${PREFIX}queue_duration_seconds`,
    help: 'Time a pre-processed frame waited for an inference worker.',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly preprocessDuration = new Histogram({
    name: `${PREFIX}preprocess_duration_seconds`,
    help: 'Decode, resize and tensor conversion time per frame.',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly inferenceDuration = new Histogram({
    name: `${PREFIX}inference_duration_seconds`,
    help: 'onnxruntime session.run time per batch.',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly postprocessDuration = new Histogram({
    name: `${PREFIX}postprocess_duration_seconds`,
    help: 'Post-processing (softmax, top-K, NMS) time per batch.',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly batchSize = new Histogram({
    name: `${PREFIX}batch_size`,
    help: 'Frames per inference call.',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });

  readonly queueDepth = new Gauge({
    name: `${PREFIX}queue_depth`,
    help: 'Frames admitted and not yet dispatched to an inference worker.',
    registers: [this.registry],
  });

  readonly queueCapacity = new Gauge({
    name: `${PREFIX}queue_capacity`,
    help: 'The active MAX_QUEUE: frames the queue admits before answering 429.',
    registers: [this.registry],
  });

  readonly queueRejections = new Counter({
    name: `${PREFIX}queue_rejections_total`,
    help: 'Frames refused with 429 because the queue was full.',
    registers: [this.registry],
  });

  readonly modelInfo = new Gauge({
    name: `${PREFIX}model_info`,
    help: 'The active model: 1 for the served name/version/sha256/provider.',
    labelNames: ['name', 'version', 'sha256', 'provider'] as const,
    registers: [this.registry],
  });

  readonly ready = new Gauge({
    name: `${PREFIX}ready`,
    help: '1 while a warmed model is active and the daemon accepts frames.',
    registers: [this.registry],
  });

  readonly modelLoads = new Counter({
    name: `${PREFIX}model_loads_total`,
    help: 'Model loads by outcome (success, or the error code).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly modelSwaps = new Counter({
    name: `${PREFIX}model_swaps_total`,
    help: 'Model activations (hot swaps) by outcome.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly modelLoadDuration = new Histogram({
    name: `${PREFIX}model_load_duration_seconds`,
    help: 'Time to load, check and warm a model.',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });

  readonly predictions = new Counter({
    name: `${PREFIX}predictions_total`,
    help: 'Predicted labels: the top class per frame, or each detection.',
    labelNames: ['label'] as const,
    registers: [this.registry],
  });

  readonly frames = new Counter({
    name: `${PREFIX}frames_total`,
    help: 'Frames scored, by defect decision.',
    labelNames: ['defect'] as const,
    registers: [this.registry],
  });

  readonly telemetryProduced = new Counter({
    name: `${PREFIX}telemetry_items_produced_total`,
    help: 'Items (results, events, stats) produced for IoT Hub outputs.',
    labelNames: ['output'] as const,
    registers: [this.registry],
  });

  readonly telemetryDelivered = new Counter({
    name: `${PREFIX}telemetry_items_delivered_total`,
    help: 'Items acknowledged by IoT Hub.',
    labelNames: ['output'] as const,
    registers: [this.registry],
  });

  readonly telemetryDropped = new Counter({
    name: `${PREFIX}telemetry_items_dropped_total`,
    help: 'Items dropped (oldest first) because the upstream buffer was full.',
    labelNames: ['output'] as const,
    registers: [this.registry],
  });

  readonly telemetryMessages = new Counter({
    name: `${PREFIX}telemetry_messages_total`,
    help: 'IoT Hub messages by output and outcome (sent, failed).',
    labelNames: ['output', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly telemetryBuffer = new Gauge({
    name: `${PREFIX}telemetry_buffer_items`,
    help: 'Items waiting in the upstream buffer.',
    labelNames: ['output'] as const,
    registers: [this.registry],
  });

  readonly telemetryBufferCapacity = new Gauge({
    name: `${PREFIX}telemetry_buffer_capacity_items`,
    help: 'TELEMETRY_BUFFER_ITEMS: the upstream buffer bound; the oldest items are dropped beyond it.',
    registers: [this.registry],
  });

  /**
   * Per-runtime figures, labelled by role (`active`, `candidate`): the unlabelled queue, batch
   * and duration series above describe the frames that answer the line, these each runtime.
   */
  readonly runtimeWorkers = new Gauge({
    name: `${PREFIX}runtime_workers`,
    help: 'Inference worker threads (one onnxruntime session each) of the runtime with this role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly runtimeThreads = new Gauge({
    name: `${PREFIX}runtime_threads`,
    help: "Threads of the runtime with this role: workers times onnxruntime's intra-op threads.",
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly runtimeModelBytes = new Gauge({
    name: `${PREFIX}runtime_model_bytes`,
    help: 'Size of the model file each session of the runtime holds, times its sessions, bytes.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly runtimeQueueDepth = new Gauge({
    name: `${PREFIX}runtime_queue_depth`,
    help: 'Frames admitted to the runtime with this role and not yet dispatched to a worker.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly runtimeFrames = new Counter({
    name: `${PREFIX}runtime_frames_total`,
    help: 'Frames inferred by the runtime with this role.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly runtimeInferenceDuration = new Histogram({
    name: `${PREFIX}runtime_inference_duration_seconds`,
    help: 'onnxruntime session.run time per batch, by runtime role.',
    labelNames: ['role'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly streamDropped = new Counter({
    name: `${PREFIX}frame_stream_dropped_total`,
    help: 'Scored frames a subscriber (telemetry, capture, drift, shadow, console) fell too far behind to receive.',
    labelNames: ['subscriber'] as const,
    registers: [this.registry],
  });

  readonly streamFailures = new Counter({
    name: `${PREFIX}frame_stream_failures_total`,
    help: 'Scored frames whose subscriber threw or rejected.',
    labelNames: ['subscriber'] as const,
    registers: [this.registry],
  });

  /** Shadow trial (README, "Shadow trial"): frames offered to the candidate, by what became of them. */
  readonly shadowFrames = new Counter({
    name: `${PREFIX}shadow_frames_total`,
    help: 'Frames offered to the shadow candidate, by outcome (compared, skipped by the sample rate, shed because the line is busy or the candidate queue is full, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly shadowFlips = new Counter({
    name: `${PREFIX}shadow_flips_total`,
    help: 'Compared frames whose defect verdict the candidate flips, by direction (ok_to_defect, defect_to_ok).',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly shadowAgreement = new Gauge({
    name: `${PREFIX}shadow_agreement_ratio`,
    help: 'Share of compared frames where candidate and active model gave the same frame label, since the trial began.',
    registers: [this.registry],
  });
  readonly shadowLatency = new Histogram({
    name: `${PREFIX}shadow_latency_seconds`,
    help: 'Queue, pre-processing, inference and post-processing time of a compared frame, by role (active, candidate).',
    labelNames: ['role'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  readonly telemetryJournalErrors = new Counter({
    name: `${PREFIX}telemetry_journal_errors_total`,
    help: 'Failed writes and syncs of the telemetry journal under DATA_DIR (disk full, I/O errors).',
    registers: [this.registry],
  });

  readonly iothubConnected = new Gauge({
    name: `${PREFIX}iothub_connected`,
    help: '1 while the IoT Hub (edgeHub) connection is up; 0 otherwise (and in standalone mode).',
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) {
      this.registerEventLoopDelay();
      collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
      // prom-client names these gauges with a `_total` suffix, which promtool refuses; the
      // nodejs_active_{handles,requests,resources} gauges carry the same data.
      for (const n of ['handles', 'requests', 'resources']) {
        this.registry.removeSingleMetric(`${PREFIX}nodejs_active_${n}_total`);
      }
    }
    // Counters that alerts take increase() of exist from start-up, so a first failure is seen.
    this.modelLoads.inc({ outcome: 'success' }, 0);
    this.modelSwaps.inc({ outcome: 'success' }, 0);
  }

  /**
   * `edge_scorer_event_loop_delay_seconds{stat}`: how late a 10 ms timer fired, over the
   * interval since the previous scrape (stat p50, p99, max; not a `quantile` label, which promtool keeps to summaries). Node's histogram
   * records the time between timer ticks, interval included, so an idle loop reads ~10-11 ms
   * there, and so does prom-client's `nodejs_eventloop_lag_p99_seconds`; here the interval is
   * subtracted, so an idle loop reads ~0 and the figure is the delay a request would have seen.
   */
  private registerEventLoopDelay(): void {
    const h = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    h.enable();
    const delay = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) / 1000;
    new Gauge({
      name: `${PREFIX}event_loop_delay_seconds`,
      help: 'Event-loop delay since the previous scrape, by stat (p50, p99, max).',
      labelNames: ['stat'] as const,
      registers: [this.registry],
      collect() {
        // No tick since the previous scrape (a scrape right after another): report nothing new.
        if (h.count === 0) return;
        this.set({ stat: 'p50' }, delay(h.percentile(50)));
        this.set({ stat: 'p99' }, delay(h.percentile(99)));
        this.set({ stat: 'max' }, delay(h.max));
        h.reset();
      },
    });
  }
}
