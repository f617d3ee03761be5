import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { batched, OUTPUTS, type Item, type Output } from './item.js';
import { Journal, type OpenBatch } from './journal.js';
import { readLegacyPending, removeLegacyPending } from './legacy-pending.js';

export { OUTPUTS, type Item, type Output } from './item.js';

export interface Account {
  produced: number;
  delivered: number;
  dropped: number;
  pending: number;
}

/** The items of one message and the id it is sent under. */
export interface Batch {
  /** Stable across resends and restarts: journal id, output, first and last sequence as first sent. */
  id: string;
  items: Item[];
}

/**
 * The bounded upstream buffer with an exact account per output: produced = delivered + dropped +
 * pending, always. When full, the oldest item is dropped (and counted). Every item, every delivery
 * or drop and every message about to be sent is written to a journal under
 * `<dataDir>/telemetry/journal` (items as they are pushed) and synced to disk in groups every
 * syncIntervalMs (README, "Upstream telemetry"; docs/telemetry-journal.md): a killed process loses
 * nothing it answered, a power loss at most the last group, and a message sent before a crash is
 * sent again after it with the same items under the same id. Items restored
 * from the journal count as produced again in the new process, so the account stays exact per
 * process lifetime.
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
  private readonly dir: string;
  private readonly journal: Journal;
  private journalId: string | undefined;
  /** The message being sent (or sent and not yet acknowledged): resent as it was. */
  private open: { id: string; items: Item[] } | undefined;

  constructor(
    private readonly opts: {
      dataDir: string;
      maxItems: number;
      /** Journal writes are synced to disk at most this often, ms: what a power loss can lose. */
      syncIntervalMs: number;
      logger: Logger;
      onDrop?: (item: Item) => void;
      /** Called for every failed journal write or sync. */
      onJournalError?: (err: unknown) => void;
    },
  ) {
    this.dir = path.join(opts.dataDir, 'telemetry');
    this.journal = new Journal(
      {
        dir: path.join(this.dir, 'journal'),
        syncIntervalMs: opts.syncIntervalMs,
        logger: opts.logger,
        ...(opts.onJournalError ? { onError: opts.onJournalError } : {}),
      },
      {
        nextSeq: () => this.nextSeq,
        firstWaitingSeq: () => this.items[this.head]?.seq ?? this.nextSeq,
        waiting: () =>
          this.items.slice(this.head).filter((it): it is Item => it !== undefined && !this.done.has(it)),
        isWaiting: (it) => !this.done.has(it) && this.isWaiting(it),
        openBatch: () => this.openRecord(),
      },
    );
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

  /**
   * Restores what the journal holds (and what an earlier version spilled to pending.json); must
   * run before the first push. Returns how many items were restored.
   */
  async load(): Promise<number> {
    if (this.journalId !== undefined) throw new Error('TelemetryBuffer.load() runs once');
    const replay = await this.journal.replay();
    const legacy = await readLegacyPending(this.dir);
    this.journalId = replay.journalId ?? randomBytes(4).toString('hex');
    this.journal.start(this.journalId);
    this.nextSeq = Math.max(this.nextSeq, replay.nextSeq, legacy.nextSeq);
    const taken = legacy.items.filter((r) => !replay.items.has(r.seq));
    const records = [...replay.items.values(), ...taken].sort((a, b) => a.seq - b.seq);
    const fromLegacy = new Set(taken.map((r) => r.seq));
    for (const r of records) {
      this.nextSeq = Math.max(this.nextSeq, r.seq + 1);
      const item: Item = {
        seq: r.seq,
        output: r.output,
        group: r.group,
        properties: r.properties,
        json: r.json,
        bytes: Buffer.byteLength(r.json),
        producedAt: r.producedAt,
      };
      this.enqueue(item, fromLegacy.has(item.seq));
    }
    if (replay.open) this.reopen(replay.open);
    // pending.json goes once its items are in the journal, and with it any spill's temporary file.
    if (taken.length > 0) await this.flush();
    await removeLegacyPending(this.dir);
    this.opts.logger.info(
      { component: 'telemetry', restored: records.length, fromPendingJson: taken.length },
      'restored pending telemetry',
    );
    return records.length;
  }

  private reopen(open: OpenBatch): void {
    const seqs = new Set(open.seqs);
    const items = this.items
      .slice(this.head)
      .filter((it): it is Item => it !== undefined && seqs.has(it.seq) && !this.done.has(it));
    if (items.length > 0) this.open = { id: open.id, items };
  }

  /** Adds an item, dropping the oldest when the buffer is full. */
  push(item: Omit<Item, 'seq'>): Item {
    if (this.journalId === undefined) throw new Error('TelemetryBuffer.load() must run before push()');
    const full = { ...item, seq: this.nextSeq++ };
    this.enqueue(full, true);
    return full;
  }

  private enqueue(item: Item, journal: boolean): void {
    if (this.waiting >= this.opts.maxItems) {
      const oldest = this.items[this.head]!;
      this.done.add(oldest);
      this.waiting--;
      const a = this.accounts.get(oldest.output)!;
      a.dropped++;
      a.pending--;
      this.journal.finished(oldest.seq);
      this.opts.onDrop?.(oldest);
      this.advance();
    }
    this.items.push(item);
    this.waiting++;
    const a = this.accounts.get(item.output)!;
    a.produced++;
    a.pending++;
    if (journal) this.journal.produced(item);
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
   * The next message's items. A message that was sent and not acknowledged (in this process or
   * before a restart) comes first, as it was, less what was dropped since. Otherwise the oldest
   * waiting item, alone when its output is not batched (events, stats, captures), else with the
   * following ones of the same output and group (ok and defect results interleave; each group
   * still fills whole messages), at most `maxItems`, whose bodies fit
   * `maxBytes` together. The scan is bounded so a large backlog does not cost a pass over all of
   * it per message.
   */
  peekBatch(maxItems: number, maxBytes: number): Batch | undefined {
    if (this.open) {
      const items = this.open.items.filter((it) => !this.done.has(it) && this.isWaiting(it));
      // An open batch of several items of an output that is not batched (written by an older
      // version) is not resent as one message: its items go out one by one under new ids.
      if (items.length > 0 && (items.length === 1 || batched(items[0]!.output)))
        return { id: this.open.id, items };
      this.open = undefined;
    }
    const first = this.items[this.head];
    if (!first) return undefined;
    const batch: Item[] = [first];
    if (!batched(first.output))
      return { id: `${this.journalId}-${first.output}-${first.seq}-${first.seq}`, items: batch };
    let bytes = first.bytes;
    const scanEnd = Math.min(this.items.length, this.head + maxItems * 8);
    for (let i = this.head + 1; i < scanEnd && batch.length < maxItems; i++) {
      const it = this.items[i]!;
      if (this.done.has(it) || it.output !== first.output || it.group !== first.group) continue;
      if (bytes + it.bytes + 1 > maxBytes) break;
      bytes += it.bytes + 1;
      batch.push(it);
    }
    const last = batch[batch.length - 1]!;
    return { id: `${this.journalId}-${first.output}-${first.seq}-${last.seq}`, items: batch };
  }

  /**
   * Records that `batch` is about to be sent, so that after a crash the same items go out again
   * under the same id; resolves once the record is on disk.
   */
  async sending(batch: Batch): Promise<void> {
    if (this.open?.id === batch.id) return;
    this.open = { id: batch.id, items: batch.items };
    await this.journal.opened(this.openRecord()!);
  }

  private openRecord(): OpenBatch | undefined {
    return this.open && { id: this.open.id, seqs: this.open.items.map((it) => it.seq) };
  }

  /**
   * Marks a sent batch delivered; items dropped while it was in flight stay counted as dropped.
   * Returns how many items this delivery counted.
   */
  delivered(batch: Batch): number {
    let counted = 0;
    for (const it of batch.items) {
      if (this.done.has(it) || !this.isWaiting(it)) continue;
      this.done.add(it);
      this.waiting--;
      const a = this.accounts.get(it.output)!;
      a.delivered++;
      a.pending--;
      this.journal.finished(it.seq);
      counted++;
    }
    if (this.open?.id === batch.id) this.open = undefined;
    this.advance();
    return counted;
  }

  private isWaiting(it: Item): boolean {
    // Items are in sequence order; anything before the head was delivered or dropped.
    const head = this.items[this.head];
    return head !== undefined && it.seq >= head.seq;
  }

  /** Writes what the journal has queued now and resolves once it is on disk. */
  async flush(): Promise<void> {
    this.journal.flush();
    await this.journal.durable();
  }

  /** Writes what is queued and closes the journal. */
  async close(): Promise<void> {
    await this.journal.close();
  }
}
