import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

export const OUTPUTS = ['results', 'events', 'stats'] as const;
export type Output = (typeof OUTPUTS)[number];

/** One produced item: a frame result, a lifecycle event or a stats snapshot. */
export interface Item {
  /** Monotonic sequence, unique per daemon data dir. */
  seq: number;
  output: Output;
  /** Routing group: items of one message share it (results: defect flag + model version). */
  group: string;
  /** Message properties shared by the group. */
  properties: Record<string, string>;
  body: unknown;
  /** Serialised size of `body`, bytes (UTF-8). */
  bytes: number;
  producedAt: number;
}

export interface Account {
  produced: number;
  delivered: number;
  dropped: number;
  pending: number;
}

interface Snapshot {
  version: 1;
  nextSeq: number;
  items: Item[];
}

/**
 * The bounded upstream buffer with an exact account per output: produced = delivered + dropped +
 * pending, always. When full, the oldest item is dropped (and counted). Pending items are spilled
 * to `<dataDir>/telemetry/pending.json` (atomically, at most every spillIntervalMs and on stop), so
 * results pending at a restart are sent after it; items restored from disk count as produced again
 * in the new process, so the account stays exact per process lifetime.
 */
export class TelemetryBuffer {
  private items: Item[] = [];
  private head = 0;
  private nextSeq = 1;
  private readonly accounts = new Map<Output, Account>(
    OUTPUTS.map((o) => [o, { produced: 0, delivered: 0, dropped: 0, pending: 0 }]),
  );
  private dirty = false;
  private spillTimer: NodeJS.Timeout | undefined;
  private spilling: Promise<void> | undefined;
  private readonly file: string;

  constructor(
    private readonly opts: {
      dataDir: string;
      maxItems: number;
      spillIntervalMs: number;
      logger: Logger;
      onDrop?: (item: Item) => void;
    },
  ) {
    this.file = path.join(opts.dataDir, 'telemetry', 'pending.json');
  }

  get capacity(): number {
    return this.opts.maxItems;
  }

  get size(): number {
    return this.items.length - this.head;
  }

  account(output: Output): Account {
    return { ...this.accounts.get(output)! };
  }

  /** Restores items spilled by the previous process. */
  async load(): Promise<number> {
    let snap: Snapshot;
    try {
      snap = JSON.parse(await readFile(this.file, 'utf8')) as Snapshot;
    } catch {
      return 0;
    }
    if (snap.version !== 1 || !Array.isArray(snap.items)) return 0;
    this.nextSeq = Math.max(this.nextSeq, snap.nextSeq);
    for (const item of snap.items) this.enqueue(item);
    this.opts.logger.info(
      { component: 'telemetry', restored: snap.items.length },
      'restored pending telemetry',
    );
    return snap.items.length;
  }

  /** Adds an item, dropping the oldest when the buffer is full. */
  push(item: Omit<Item, 'seq'>): Item {
    const full = { ...item, seq: this.nextSeq++ };
    this.enqueue(full);
    return full;
  }

  private enqueue(item: Item): void {
    if (this.size >= this.opts.maxItems) {
      const oldest = this.items[this.head]!;
      this.head++;
      const a = this.accounts.get(oldest.output)!;
      a.dropped++;
      a.pending--;
      this.opts.onDrop?.(oldest);
    }
    this.items.push(item);
    const a = this.accounts.get(item.output)!;
    a.produced++;
    a.pending++;
    this.compact();
    this.markDirty();
  }

  /**
   * The next message's items: oldest first, all of one output and group, at most `maxItems`,
   * whose bodies fit `maxBytes` together.
   */
  peekBatch(maxItems: number, maxBytes: number): Item[] {
    const first = this.items[this.head];
    if (!first) return [];
    const batch: Item[] = [first];
    let bytes = first.bytes;
    for (let i = this.head + 1; i < this.items.length && batch.length < maxItems; i++) {
      const it = this.items[i]!;
      if (it.output !== first.output || it.group !== first.group) break;
      if (bytes + it.bytes + 1 > maxBytes) break;
      bytes += it.bytes + 1;
      batch.push(it);
    }
    return batch;
  }

  /** Marks the oldest items delivered (they are still at the head unless dropped meanwhile). */
  delivered(batch: Item[]): void {
    const seqs = new Set(batch.map((b) => b.seq));
    while (this.head < this.items.length && seqs.has(this.items[this.head]!.seq)) {
      const it = this.items[this.head]!;
      this.head++;
      const a = this.accounts.get(it.output)!;
      a.delivered++;
      a.pending--;
    }
    this.compact();
    this.markDirty();
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  private markDirty(): void {
    this.dirty = true;
    this.spillTimer ??= setTimeout(() => {
      this.spillTimer = undefined;
      void this.spill();
    }, this.opts.spillIntervalMs);
    this.spillTimer.unref();
  }

  /** Writes the pending items atomically; a failure is logged and retried at the next change. */
  spill(): Promise<void> {
    if (!this.dirty) return this.spilling ?? Promise.resolve();
    this.spilling = (async () => {
      await this.spilling;
      this.dirty = false;
      const snap: Snapshot = { version: 1, nextSeq: this.nextSeq, items: this.items.slice(this.head) };
      const tmp = `${this.file}.${process.pid}.tmp`;
      try {
        await mkdir(path.dirname(this.file), { recursive: true });
        await writeFile(tmp, JSON.stringify(snap));
        await rename(tmp, this.file);
      } catch (err) {
        this.dirty = true;
        this.opts.logger.error({ component: 'telemetry', err }, 'spilling pending telemetry failed');
      }
    })();
    return this.spilling;
  }

  async close(): Promise<void> {
    if (this.spillTimer) clearTimeout(this.spillTimer);
    this.spillTimer = undefined;
    this.dirty = true;
    await this.spill();
  }
}
