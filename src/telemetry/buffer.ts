import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

export const OUTPUTS = ['results', 'events', 'stats', 'captures'] as const;
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
  /** The body, serialised once when the item is produced (JSON). */
  json: string;
  /** Size of `json`, bytes (UTF-8). */
  bytes: number;
  producedAt: number;
}

export interface Account {
  produced: number;
  delivered: number;
  dropped: number;
  pending: number;
}

/** On disk, an item carries its body as JSON (`body`), not as a string of it. */
type SpilledItem = Omit<Item, 'json'> & { body: unknown };

interface Snapshot {
  version: 1;
  nextSeq: number;
  items: SpilledItem[];
}

/** Items serialised per write while spilling; the event loop runs between writes. */
const SPILL_CHUNK = 1000;

function isSpilledItem(v: unknown): v is SpilledItem {
  const it = v as SpilledItem | null;
  return (
    typeof it === 'object' &&
    it !== null &&
    Number.isSafeInteger(it.seq) &&
    OUTPUTS.includes(it.output) &&
    typeof it.group === 'string' &&
    typeof it.properties === 'object' &&
    it.properties !== null &&
    it.body !== undefined
  );
}

/** One item as spilled: the cached body JSON spliced in, so bodies are never serialised again. */
function spilledJson(it: Item): string {
  const { seq, output, group, properties, bytes, producedAt } = it;
  const head = JSON.stringify({ seq, output, group, properties, bytes, producedAt });
  return `${head.slice(0, -1)},"body":${it.json}}`;
}

/**
 * The bounded upstream buffer with an exact account per output: produced = delivered + dropped +
 * pending, always. When full, the oldest item is dropped (and counted). Pending items are spilled
 * to `<dataDir>/telemetry/pending.json` (atomically, at most every spillIntervalMs and on stop), so
 * results pending at a restart are sent after it; items restored from disk count as produced again
 * in the new process, so the account stays exact per process lifetime.
 */
export class TelemetryBuffer {
  /** Slots before the head are cleared as it passes them, so delivered items are freed at once. */
  private items: (Item | undefined)[] = [];
  private head = 0;
  /** Items at or after the head that were delivered or dropped out of order. */
  private readonly done = new Set<Item>();
  private waiting = 0;
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

  /** Items waiting (neither delivered nor dropped). */
  get size(): number {
    return this.waiting;
  }

  account(output: Output): Account {
    return { ...this.accounts.get(output)! };
  }

  /** Restores items spilled by the previous process; items that are not well-formed are skipped. */
  async load(): Promise<number> {
    let snap: Snapshot;
    try {
      snap = JSON.parse(await readFile(this.file, 'utf8')) as Snapshot;
    } catch {
      return 0;
    }
    if (snap?.version !== 1 || !Array.isArray(snap.items)) return 0;
    if (Number.isSafeInteger(snap.nextSeq)) this.nextSeq = Math.max(this.nextSeq, snap.nextSeq);
    let restored = 0;
    for (const raw of snap.items as unknown[]) {
      if (!isSpilledItem(raw)) continue;
      const { body, ...rest } = raw;
      const json = JSON.stringify(body);
      this.nextSeq = Math.max(this.nextSeq, rest.seq + 1);
      const producedAt = Number.isFinite(rest.producedAt) ? rest.producedAt : Date.now();
      this.enqueue({ ...rest, json, bytes: Buffer.byteLength(json), producedAt });
      restored++;
    }
    this.opts.logger.info({ component: 'telemetry', restored }, 'restored pending telemetry');
    return restored;
  }

  /** Adds an item, dropping the oldest when the buffer is full. */
  push(item: Omit<Item, 'seq'>): Item {
    const full = { ...item, seq: this.nextSeq++ };
    this.enqueue(full);
    return full;
  }

  private enqueue(item: Item): void {
    if (this.waiting >= this.opts.maxItems) {
      const oldest = this.items[this.head]!;
      this.done.add(oldest);
      this.waiting--;
      const a = this.accounts.get(oldest.output)!;
      a.dropped++;
      a.pending--;
      this.opts.onDrop?.(oldest);
      this.advance();
    }
    this.items.push(item);
    this.waiting++;
    const a = this.accounts.get(item.output)!;
    a.produced++;
    a.pending++;
    this.markDirty();
  }

  /** Moves the head past items already delivered or dropped. */
  private advance(): void {
    while (this.head < this.items.length && this.done.has(this.items[this.head]!)) {
      this.done.delete(this.items[this.head]!);
      this.items[this.head] = undefined;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * The next message's items: the oldest waiting item and the following ones of the same output
   * and group (ok and defect results interleave; each group still fills whole messages), at most
   * `maxItems`, whose bodies fit `maxBytes` together. The scan is bounded so a large backlog does
   * not cost a pass over all of it per message.
   */
  peekBatch(maxItems: number, maxBytes: number): Item[] {
    const first = this.items[this.head];
    if (!first) return [];
    const batch: Item[] = [first];
    let bytes = first.bytes;
    const scanEnd = Math.min(this.items.length, this.head + maxItems * 8);
    for (let i = this.head + 1; i < scanEnd && batch.length < maxItems; i++) {
      const it = this.items[i]!;
      if (this.done.has(it) || it.output !== first.output || it.group !== first.group) continue;
      if (bytes + it.bytes + 1 > maxBytes) break;
      bytes += it.bytes + 1;
      batch.push(it);
    }
    return batch;
  }

  /**
   * Marks a sent batch delivered; items dropped while it was in flight stay counted as dropped.
   * Returns how many items this delivery counted.
   */
  delivered(batch: Item[]): number {
    let counted = 0;
    for (const it of batch) {
      if (this.done.has(it) || !this.isWaiting(it)) continue;
      this.done.add(it);
      this.waiting--;
      const a = this.accounts.get(it.output)!;
      a.delivered++;
      a.pending--;
      counted++;
    }
    this.advance();
    this.markDirty();
    return counted;
  }

  private isWaiting(it: Item): boolean {
    // Items are in sequence order; anything before the head was delivered or dropped.
    const head = this.items[this.head];
    return head !== undefined && it.seq >= head.seq;
  }

  private markDirty(): void {
    this.dirty = true;
    this.spillTimer ??= setTimeout(() => {
      this.spillTimer = undefined;
      void this.spill();
    }, this.opts.spillIntervalMs);
    this.spillTimer.unref();
  }

  /**
   * Writes the pending items atomically (a temporary file renamed over the last one); a failure is
   * logged and retried at the next change. Bodies are written from their cached JSON, a chunk of
   * items per write, so a full buffer (100,000 results, tens of MB) never holds the event loop for
   * more than one chunk.
   */
  spill(): Promise<void> {
    if (!this.dirty) return this.spilling ?? Promise.resolve();
    this.spilling = (async () => {
      await this.spilling;
      this.dirty = false;
      const items = this.items
        .slice(this.head)
        .filter((it): it is Item => it !== undefined && !this.done.has(it));
      const tmp = `${this.file}.${process.pid}.tmp`;
      try {
        await mkdir(path.dirname(this.file), { recursive: true });
        const fh = await open(tmp, 'w');
        try {
          await fh.write(`{"version":1,"nextSeq":${this.nextSeq},"items":[`);
          for (let i = 0; i < items.length; i += SPILL_CHUNK) {
            const chunk = items
              .slice(i, i + SPILL_CHUNK)
              .map(spilledJson)
              .join(',');
            await fh.write(i === 0 ? chunk : `,${chunk}`);
          }
          await fh.write(']}');
        } finally {
          await fh.close();
        }
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
