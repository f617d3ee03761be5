import { closeSync, fdatasync, ftruncateSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { Item } from './item.js';
import {
  line,
  producedJson,
  readJournal,
  toRanges,
  type OpenBatch,
  type Replay,
  type Segment,
} from './journal-records.js';

export type { OpenBatch, ProducedRecord, Replay } from './journal-records.js';

/*
 * The write-ahead journal behind the telemetry buffer (docs/telemetry-journal.md). Append-only
 * segment files `<dir>/<12 digits>.log` of one record per line: an 8-hex-digit CRC-32 of the rest
 * of the line, a space, the record as JSON (a P record: its fields as JSON, a tab, the item's body
 * JSON as it was produced), a newline.
 *
 *   H  segment header: journal id, the next sequence number when the segment was opened
 *   P  an item produced
 *   D  items done (delivered or dropped), as sequence ranges
 *   B  a message about to be sent: its id and the ranges of its items
 *   C  end of a checkpoint: the items of sequence < nextSeq that are waiting are exactly those
 *      written before it in this segment
 *
 * P and B records are written at once, one write(2) each, so a result is in the page cache as
 * soon as it is produced (the turn after its answer) and a killed process loses only what it
 * answered in its last moment; D records are
 * written together at the end of the event-loop turn. fdatasync runs on the thread pool at most
 * every syncIntervalMs and covers every write before it: a power loss loses that much at most.
 * A segment is never appended to after a failed write or by another process, so a bad record (a
 * torn tail) ends what is read of its segment. Segments are deleted once every item they hold is
 * done, oldest first.
 */

const fdatasyncAsync = promisify(fdatasync);

/** What a checkpoint and segment deletion need to know of the buffer. */
export interface JournalSource {
  nextSeq(): number;
  /** Lowest sequence number still waiting; nextSeq() when nothing is. */
  firstWaitingSeq(): number;
  /** Items waiting, in sequence order (a snapshot). */
  waiting(): Item[];
  isWaiting(item: Item): boolean;
  openBatch(): OpenBatch | undefined;
}

export interface JournalOptions {
  dir: string;
  syncIntervalMs: number;
  logger: Logger;
  /** Called for every failed write or sync (metrics). */
  onError?: (err: unknown) => void;
}

/** A segment grows to about this size before the next one is opened. */
const SEGMENT_BYTES = 8 * 1024 * 1024;
/** While writes fail, records queue up to this size; beyond it a checkpoint replaces them. */
const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/** Wait between attempts to write again after a failure. */
const RETRY_MS = 1000;
/** Items per write while a checkpoint is written; the event loop turns between writes. */
const CHECKPOINT_CHUNK = 1000;

export class Journal {
  private journalId: string | undefined;
  private segmentNo = 0;
  private fd: number | undefined;
  private current = '';
  private size = 0;
  private closed: Segment[] = [];
  /** Descriptors of segments left behind, closed once a sync has covered them. */
  private retired: number[] = [];
  private queue: string[] = [];
  private queuedBytes = 0;
  private done: number[] = [];
  /** The write at the end of this event-loop turn. */
  private immediate: NodeJS.Immediate | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private lastSyncAt = 0;
  /** Writes failed; the next attempt is timed. */
  private failing = false;
  /** The queue was given up: the next segment starts with a checkpoint of what is waiting. */
  private needCheckpoint = false;
  private checkpointing = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** When writes started to fail (for the log line once they work again). */
  private failedAt: number | undefined;
  private writes = 0;
  private synced = 0;
  private syncing: Promise<void> | undefined;
  private syncAgain = false;
  private syncWaiters: { gen: number; resolve: () => void }[] = [];
  private closing: Promise<void> | undefined;
  /** Closed: nothing is written any more. */
  private ended = false;

  constructor(
    private readonly opts: JournalOptions,
    private readonly source: JournalSource,
  ) {}

  /** Reads every segment: what was waiting when the last process stopped or died. */
  async replay(): Promise<Replay> {
    const { replay, segments, lastSegmentNo } = await readJournal(this.opts.dir, this.opts.logger);
    this.segmentNo = lastSegmentNo;
    this.closed = segments;
    return replay;
  }

  /** Starts writing; the first write opens a new segment (one of another process is never appended to). */
  start(journalId: string): void {
    this.journalId = journalId;
  }

  /** Writes an item's P record at once (queues it while writes fail). */
  produced(item: Item): void {
    this.append(producedJson(item), true);
  }

  /** Queues the fact that an item was delivered or dropped; written at the end of this turn. */
  finished(seq: number): void {
    if (this.needCheckpoint && !this.checkpointing) return;
    this.done.push(seq);
    this.queuedBytes += 8;
    if (this.overQueued()) return;
    this.schedule();
  }

  /** Writes the record of a message about to be sent at once; resolves once it is on disk. */
  async opened(batch: OpenBatch): Promise<void> {
    this.append(JSON.stringify({ t: 'B', id: batch.id, s: toRanges(batch.seqs) }), true);
    await this.durable();
  }

  /** Queues a record; `now` writes it (and what is queued before it) at once. */
  private append(json: string, now: boolean): void {
    // A checkpoint is due: it will hold everything waiting, so the queue need not.
    if (this.needCheckpoint && !this.checkpointing) return;
    const l = line(json);
    this.queue.push(l);
    this.queuedBytes += l.length;
    if (this.overQueued()) return;
    if (now) this.flush();
    else this.schedule();
  }

  /** While writes fail the queue is bounded: past the bound a checkpoint will replace it. */
  private overQueued(): boolean {
    if (!this.failing || this.checkpointing || this.queuedBytes <= MAX_QUEUED_BYTES) return false;
    this.giveUpQueue();
    return true;
  }

  private schedule(): void {
    if (this.immediate || this.failing || this.closing) return;
    this.immediate = setImmediate(() => {
      this.immediate = undefined;
      this.flush();
    });
    this.immediate.unref();
  }

  /** Group commit: a sync at most every syncIntervalMs covers every write before it. */
  private scheduleSync(): void {
    if (this.syncTimer) return;
    const wait = Math.max(0, this.lastSyncAt + this.opts.syncIntervalMs - Date.now());
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.requestSync();
    }, wait);
    this.syncTimer.unref();
  }

  private giveUpQueue(): void {
    this.queue = [];
    this.queuedBytes = 0;
    this.done = [];
    this.needCheckpoint = true;
  }

  /** Writes what is queued now (one write); a sync follows within syncIntervalMs, on the thread pool. */
  flush(): void {
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    if (this.failing || this.checkpointing || this.ended || this.journalId === undefined) return;
    if (this.needCheckpoint) {
      void this.checkpoint();
      return;
    }
    const anyDone = this.done.length > 0;
    if (anyDone) {
      const done = this.done.sort((a, b) => a - b);
      this.done = [];
      const l = line(JSON.stringify({ t: 'D', s: toRanges(done) }));
      this.queue.push(l);
      this.queuedBytes += l.length;
    }
    if (this.queue.length === 0) return;
    const text = this.queue.join('');
    try {
      if (this.fd === undefined || this.size >= SEGMENT_BYTES) this.openSegment();
      this.write(text);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.queue = [];
    this.queuedBytes = 0;
    this.recovered();
    this.scheduleSync();
    // Only items done can make a segment deletable.
    if (anyDone) this.prune();
  }

  /** Resolves once everything written so far is on disk (or the journal cannot be written). */
  durable(): Promise<void> {
    const gen = this.writes;
    if (gen <= this.synced || this.failing || this.fd === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      this.syncWaiters.push({ gen, resolve });
      this.requestSync();
    });
  }

  private openSegment(): void {
    this.retire();
    mkdirSync(this.opts.dir, { recursive: true });
    this.segmentNo++;
    const file = path.join(this.opts.dir, `${String(this.segmentNo).padStart(12, '0')}.log`);
    this.fd = openSync(file, 'wx');
    this.size = 0;
    this.current = file;
    this.write(line(JSON.stringify({ t: 'H', v: 1, id: this.journalId, nextSeq: this.source.nextSeq() })));
    this.prune();
  }

  /** Leaves the current segment: it is closed after the next sync and deleted when all it holds is done. */
  private retire(): void {
    if (this.fd === undefined) return;
    this.retired.push(this.fd);
    this.closed.push({ file: this.current, lastSeq: this.source.nextSeq() - 1 });
    this.fd = undefined;
  }

  private recovered(): void {
    if (this.failedAt === undefined) return;
    const downMs = Date.now() - this.failedAt;
    this.failedAt = undefined;
    this.opts.logger.info({ component: 'telemetry', downMs }, 'telemetry journal written again');
  }

  private write(text: string): void {
    const bytes = Buffer.from(text);
    let off = 0;
    try {
      while (off < bytes.length) off += writeSync(this.fd!, bytes, off);
    } catch (err) {
      // Cut a partial record off, so that the segment ends with whole ones; if that fails too the
      // replay stops at the torn record, and nothing is ever written after it.
      try {
        ftruncateSync(this.fd!, this.size);
      } catch {
        // as said
      }
      throw err;
    }
    this.size += bytes.length;
    this.writes++;
  }

  private fail(err: unknown): void {
    this.opts.onError?.(err);
    if (this.failedAt === undefined) {
      this.failedAt = Date.now();
      this.opts.logger.error(
        { component: 'telemetry', err },
        'writing the telemetry journal failed; items are kept in memory and written when it works again',
      );
    }
    this.failing = true;
    this.retire();
    if (this.queuedBytes > MAX_QUEUED_BYTES) this.giveUpQueue();
    for (const w of this.syncWaiters.splice(0)) w.resolve();
    if (this.retired.length > 0) this.requestSync();
    if (this.closing || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.failing = false;
      this.flush();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  /**
   * Writes everything waiting into a new segment, a chunk of items per write with the event loop
   * turning between them, then a C record; older segments are then deleted. Records produced
   * meanwhile are queued and follow the C record.
   */
  private async checkpoint(): Promise<void> {
    this.checkpointing = true;
    this.needCheckpoint = false;
    this.queue = [];
    this.queuedBytes = 0;
    this.done = [];
    const nextSeq = this.source.nextSeq();
    const items = this.source.waiting();
    const open = this.source.openBatch();
    try {
      this.openSegment();
      for (let i = 0; i < items.length; i += CHECKPOINT_CHUNK) {
        const chunk = items.slice(i, i + CHECKPOINT_CHUNK).filter((it) => this.source.isWaiting(it));
        if (chunk.length > 0) this.write(chunk.map((it) => line(producedJson(it))).join(''));
        await nextTurn();
        if (this.fd === undefined) throw new Error('journal closed during a checkpoint');
      }
      if (open) this.write(line(JSON.stringify({ t: 'B', id: open.id, s: toRanges(open.seqs) })));
      this.write(line(JSON.stringify({ t: 'C', nextSeq })));
    } catch (err) {
      this.checkpointing = false;
      this.needCheckpoint = true;
      this.fail(err);
      return;
    }
    this.checkpointing = false;
    await this.durable();
    if (this.failing) return;
    this.recovered();
    for (const seg of this.closed) seg.lastSeq = -1;
    this.flush();
    this.prune();
  }

  private requestSync(): void {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = this.runSync();
  }

  private async runSync(): Promise<void> {
    do {
      this.syncAgain = false;
      this.lastSyncAt = Date.now();
      const gen = this.writes;
      const retired = this.retired.splice(0);
      const fds = this.fd === undefined ? retired : [...retired, this.fd];
      try {
        await Promise.all(fds.map((fd) => fdatasyncAsync(fd)));
      } catch (err) {
        if (!this.failing) this.fail(err);
      }
      for (const fd of retired) {
        try {
          closeSync(fd);
        } catch {
          // already gone
        }
      }
      this.synced = Math.max(this.synced, gen);
      const due = this.syncWaiters.filter((w) => w.gen <= this.synced);
      this.syncWaiters = this.syncWaiters.filter((w) => w.gen > this.synced);
      for (const w of due) w.resolve();
    } while (this.syncAgain || this.retired.length > 0);
    this.syncing = undefined;
  }

  /** Deletes closed segments whose items are all done. */
  private prune(): void {
    const first = this.source.firstWaitingSeq();
    const gone = this.closed.filter((s) => s.lastSeq < first);
    if (gone.length === 0) return;
    this.closed = this.closed.filter((s) => s.lastSeq >= first);
    for (const s of gone) {
      unlink(s.file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') {
          this.opts.logger.warn(
            { component: 'telemetry', err },
            'deleting a telemetry journal segment failed',
          );
        }
      });
    }
  }

  /** Writes what is queued, waits for it to be on disk and closes the files. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.syncTimer) clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      if (this.retryTimer) {
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        this.failing = false;
      }
      while (this.checkpointing) await nextTurn();
      this.flush();
      await this.durable();
      this.ended = true;
      // The current segment stays until the next process prunes it.
      if (this.fd !== undefined) {
        this.retired.push(this.fd);
        this.fd = undefined;
      }
      while (this.syncing || this.retired.length > 0) {
        if (!this.syncing) this.requestSync();
        await this.syncing;
      }
    })();
    return this.closing;
  }
}
