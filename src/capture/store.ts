import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { EdgeError, ErrorCodes } from '../errors.js';
import { ID_PATTERN, RANKS, rankOf, type CaptureRecord, type HumanLabel } from './record.js';
import type { CaptureReason } from './settings.js';

interface Entry {
  record: CaptureRecord;
  /** Frame file plus sidecar, bytes on disk. */
  bytes: number;
  rank: number;
}

export interface Budget {
  maxBytes: number;
  maxItems: number;
}

export interface ListFilter {
  camera?: string;
  reason?: CaptureReason;
  labelled?: boolean;
  /** Ids below this one (the previous page's last id); pages run newest first. */
  cursor?: string;
  limit: number;
}

export interface StoreOptions {
  dir: string;
  logger: Logger;
  /** Told of every capture removed to make room, with its reason and whether it was uploaded. */
  onEvicted?: (r: CaptureRecord) => void;
}

/** Sorted insert / remove on an array of ids (ids sort by capture time). */
function lowerBound(a: string[], id: string): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
function insertSorted(a: string[], id: string): void {
  a.splice(lowerBound(a, id), 0, id);
}
function removeSorted(a: string[], id: string): void {
  const i = lowerBound(a, id);
  if (a[i] === id) a.splice(i, 1);
}

/** Writes a file under a temporary name, syncs it, then renames it into place: all or nothing. */
async function writeAtomic(file: string, data: Buffer | string): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    '.tmp',
    `${path.basename(file)}.${randomBytes(4).toString('hex')}`,
  );
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

/**
 * The capture store: one frame file and one JSON sidecar per capture in a directory under
 * DATA_DIR, plain files renamed into place (docs/capture.md, "On disk"). The frame is written
 * first and the sidecar last, so a capture exists only once both are whole; a crash at any point
 * leaves at most an orphan frame or a temporary file, which the next start removes. The sidecars
 * are also the upload queue: their `upload.state` says what is still to send.
 *
 * An in-memory index (rebuilt from the sidecars at start) keeps the budget's counts and one
 * time-ordered list per eviction rank, so choosing what to evict costs no scan.
 */
export class CaptureStore {
  private readonly entries = new Map<string, Entry>();
  private readonly byRank: string[][] = Array.from({ length: RANKS }, () => []);
  private readonly order: string[] = [];
  private totalBytes = 0;
  /** Sidecar writes per id run one after another, so the last one written is the newest state. */
  private readonly writes = new Map<string, Promise<void>>();

  constructor(private readonly opts: StoreOptions) {}

  get dir(): string {
    return this.opts.dir;
  }

  get count(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Rebuilds the index from the sidecars; removes temporary files and half captures. */
  async init(): Promise<void> {
    await mkdir(path.join(this.dir, '.tmp'), { recursive: true });
    await rm(path.join(this.dir, '.tmp'), { recursive: true, force: true });
    await mkdir(path.join(this.dir, '.tmp'), { recursive: true });
    const names = (await readdir(this.dir)).filter((n) => !n.startsWith('.'));
    const sidecars = new Set(names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    let removed = 0;
    for (const id of sidecars) {
      const record = await this.readSidecar(id);
      const frameFile = record?.frame.file;
      const frameBytes = frameFile
        ? await stat(path.join(this.dir, frameFile)).then(
            (s) => s.size,
            () => -1,
          )
        : 0;
      if (!record || frameBytes < 0 || (frameFile && frameBytes !== record.frame.bytes)) {
        // A sidecar whose frame is missing or short: an eviction interrupted half-way.
        await rm(path.join(this.dir, `${id}.json`), { force: true });
        if (frameFile) await rm(path.join(this.dir, frameFile), { force: true });
        removed++;
        continue;
      }
      const sidecarBytes = (await stat(path.join(this.dir, `${id}.json`))).size;
      this.index(record, frameBytes + sidecarBytes);
    }
    for (const n of names) {
      const id = n.split('.')[0]!;
      if (!n.endsWith('.json') && !this.entries.has(id)) {
        // A frame without its sidecar: a capture interrupted before it was committed.
        await rm(path.join(this.dir, n), { force: true });
        removed++;
      }
    }
    this.opts.logger.info(
      { component: 'capture', stored: this.count, bytes: this.bytes, removedPartial: removed },
      'capture store opened',
    );
  }

  private async readSidecar(id: string): Promise<CaptureRecord | undefined> {
    if (!ID_PATTERN.test(id)) return undefined;
    try {
      const r = JSON.parse(await readFile(path.join(this.dir, `${id}.json`), 'utf8')) as CaptureRecord;
      return r.schema === 1 && r.id === id ? r : undefined;
    } catch {
      return undefined;
    }
  }

  private index(record: CaptureRecord, bytes: number): void {
    const rank = rankOf(record);
    this.entries.set(record.id, { record, bytes, rank });
    insertSorted(this.byRank[rank]!, record.id);
    insertSorted(this.order, record.id);
    this.totalBytes += bytes;
  }

  private unindex(id: string): Entry | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    this.entries.delete(id);
    removeSorted(this.byRank[e.rank]!, id);
    removeSorted(this.order, id);
    this.totalBytes -= e.bytes;
    return e;
  }

  /** A new capture id: sorts by time. */
  static newId(now = Date.now()): string {
    return `${now.toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;
  }

  /**
   * Which captures must go for one of `bytes` and `rank` to fit the budget, least valuable first;
   * undefined when the newcomer itself is the least valuable (it is then not stored).
   */
  plan(bytes: number, rank: number, budget: Budget): string[] | undefined {
    let needBytes = this.totalBytes + bytes - budget.maxBytes;
    let needItems = this.entries.size + 1 - budget.maxItems;
    const victims: string[] = [];
    for (let r = 0; r <= rank && (needBytes > 0 || needItems > 0); r++) {
      for (const id of this.byRank[r]!) {
        if (needBytes <= 0 && needItems <= 0) break;
        victims.push(id);
        needBytes -= this.entries.get(id)!.bytes;
        needItems--;
      }
    }
    return needBytes > 0 || needItems > 0 ? undefined : victims;
  }

  /**
   * Stores a capture: makes room (least valuable first), writes the frame, then the sidecar.
   * Returns false when the budget is full of captures worth more than this one.
   */
  async add(record: CaptureRecord, frame: Buffer, budget: Budget): Promise<boolean> {
    const sidecar = JSON.stringify(record);
    const bytes = frame.length + Buffer.byteLength(sidecar);
    const victims = this.plan(bytes, rankOf(record), budget);
    if (!victims) return false;
    for (const id of victims) await this.evict(id);
    try {
      await writeAtomic(path.join(this.dir, record.frame.file!), frame);
      await writeAtomic(path.join(this.dir, `${record.id}.json`), sidecar);
    } catch (err) {
      await rm(path.join(this.dir, record.frame.file!), { force: true });
      throw new EdgeError(ErrorCodes.STORAGE_FAILED, 'the capture could not be written', {}, { cause: err });
    }
    this.index(record, bytes);
    return true;
  }

  /** Removes captures until the budget holds (after it was lowered). */
  async enforce(budget: Budget): Promise<void> {
    for (let r = 0; r < RANKS; r++) {
      while (this.totalBytes > budget.maxBytes || this.entries.size > budget.maxItems) {
        const id = this.byRank[r]![0];
        if (id === undefined) break;
        await this.evict(id);
      }
    }
  }

  /** Sidecar first, so a crash between the two leaves an orphan frame, never a listed half. */
  private async evict(id: string): Promise<void> {
    const e = this.unindex(id);
    if (!e) return;
    await this.writes.get(id);
    await rm(path.join(this.dir, `${id}.json`), { force: true });
    if (e.record.frame.file) await rm(path.join(this.dir, e.record.frame.file), { force: true });
    this.opts.onEvicted?.(e.record);
  }

  get(id: string): CaptureRecord | undefined {
    return this.entries.get(id)?.record;
  }

  /** The frame's bytes, or undefined when it is no longer on disk (uploaded and removed). */
  async readFrame(id: string): Promise<Buffer | undefined> {
    const file = this.get(id)?.frame.file;
    if (!file) return undefined;
    return readFile(path.join(this.dir, file)).catch(() => undefined);
  }

  /** Applies `change` to a capture's record and rewrites its sidecar atomically. */
  async update(id: string, change: (r: CaptureRecord) => void): Promise<CaptureRecord | undefined> {
    const e = this.entries.get(id);
    if (!e) return undefined;
    change(e.record);
    const rank = rankOf(e.record);
    if (rank !== e.rank) {
      removeSorted(this.byRank[e.rank]!, id);
      insertSorted(this.byRank[rank]!, id);
      e.rank = rank;
    }
    const previous = this.writes.get(id) ?? Promise.resolve();
    const write = previous.then(async () => {
      if (!this.entries.has(id)) return;
      const text = JSON.stringify(e.record);
      await writeAtomic(path.join(this.dir, `${id}.json`), text);
      const frameBytes = e.record.frame.file ? e.record.frame.bytes : 0;
      this.totalBytes += frameBytes + Buffer.byteLength(text) - e.bytes;
      e.bytes = frameBytes + Buffer.byteLength(text);
    });
    const settled = write.catch(() => undefined);
    this.writes.set(id, settled);
    void settled.then(() => {
      if (this.writes.get(id) === settled) this.writes.delete(id);
    });
    await write;
    return e.record;
  }

  /** Records a human label. */
  setLabel(id: string, label: HumanLabel): Promise<CaptureRecord | undefined> {
    return this.update(id, (r) => {
      r.label = label;
      r.upload.labelRevision++;
    });
  }

  /** Removes an uploaded capture's frame file; its sidecar stays (labels may still come). */
  async dropFrame(id: string): Promise<void> {
    const file = this.get(id)?.frame.file;
    if (!file) return;
    await this.update(id, (r) => {
      delete r.frame.file;
    });
    await rm(path.join(this.dir, file), { force: true });
  }

  /** One page of captures, newest first. */
  list(f: ListFilter): { items: CaptureRecord[]; next: string | undefined } {
    const items: CaptureRecord[] = [];
    let i = f.cursor === undefined ? this.order.length - 1 : lowerBound(this.order, f.cursor) - 1;
    for (; i >= 0 && items.length < f.limit; i--) {
      const r = this.entries.get(this.order[i]!)!.record;
      if (f.camera !== undefined && r.cameraId !== f.camera) continue;
      if (f.reason !== undefined && r.reason !== f.reason) continue;
      if (f.labelled !== undefined && (r.label !== null) !== f.labelled) continue;
      items.push(r);
    }
    return { items, next: i >= 0 && items.length === f.limit ? items.at(-1)!.id : undefined };
  }

  /** Every record, oldest first (the uploader's queue and the reported counts read this). */
  records(): IterableIterator<CaptureRecord> {
    const order = this.order;
    const entries = this.entries;
    return (function* () {
      for (const id of [...order]) {
        const e = entries.get(id);
        if (e) yield e.record;
      }
    })();
  }
}
