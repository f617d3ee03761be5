import { Counter, Gauge, type Registry } from 'prom-client';

const PREFIX = 'edge_scorer_capture_';

/** Capture's Prometheus series (README, "Metrics"), registered in the daemon's one registry. */
export class CaptureMetrics {
  readonly captured: Counter<'reason'>;
  readonly skipped: Counter<'reason' | 'why'>;
  readonly evicted: Counter<'reason' | 'uploaded'>;
  readonly storeBytes: Gauge;
  readonly storeItems: Gauge;
  readonly uploads: Counter<'kind' | 'outcome'>;
  readonly uploadBytes: Counter;
  readonly queueDepth: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.captured = new Counter({
      name: `${PREFIX}frames_total`,
      help: 'Frames captured for retraining, by the rule that took them.',
      labelNames: ['reason'],
      registers,
    });
    this.skipped = new Counter({
      name: `${PREFIX}skipped_total`,
      help: 'Frames a rule chose but capture did not keep, by reason and why (quota-camera, quota-label, budget, error).',
      labelNames: ['reason', 'why'],
      registers,
    });
    this.evicted = new Counter({
      name: `${PREFIX}evictions_total`,
      help: 'Captures removed to keep the disk budget, by reason and whether they had been uploaded.',
      labelNames: ['reason', 'uploaded'],
      registers,
    });
    this.storeBytes = new Gauge({
      name: `${PREFIX}store_bytes`,
      help: 'Bytes the capture store holds on disk (frames and sidecars).',
      registers,
    });
    this.storeItems = new Gauge({
      name: `${PREFIX}store_items`,
      help: 'Captures in the local store.',
      registers,
    });
    this.uploads = new Counter({
      name: `${PREFIX}uploads_total`,
      help: 'Blob uploads by kind (capture, sidecar, jsonl) and outcome (uploaded, retry, refused, quarantined).',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.uploadBytes = new Counter({
      name: `${PREFIX}upload_bytes_total`,
      help: 'Bytes uploaded to blob storage.',
      registers,
    });
    this.queueDepth = new Gauge({
      name: `${PREFIX}upload_queue_items`,
      help: 'Captures waiting to be uploaded (new ones, and sidecars with a newer label).',
      registers,
    });
    for (const reason of ['defect', 'uncertain', 'sample']) this.captured.inc({ reason }, 0);
  }
}
