import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from 'pino';
import { OUTPUTS, type Item, type Output } from './item.js';

/*
 * The telemetry journal's records and how a directory of segments is read back
 * (docs/telemetry-journal.md); writing is src/telemetry/journal.ts.
 */

/** A produced item as the journal holds it; `json` is its body as it was serialised. */
export interface ProducedRecord {
  seq: number;
  output: Output;
  group: string;
  properties: Record<string, string>;
  producedAt: number;
  json: string;
}

/** A message that was being sent: its id and the sequence numbers of its items. */
export interface OpenBatch {
  id: string;
  seqs: number[];
}

/** What the journal holds: every item produced and not yet done, and the message in flight. */
export interface Replay {
  journalId: string | undefined;
  nextSeq: number;
  items: Map<number, ProducedRecord>;
  open: OpenBatch | undefined;
}

/** Segment files: a 12-digit number, increasing; never reused within a data dir. */
const SEGMENT_NAME = /^(\d{12})\.log$/;

export interface Segment {
  file: string;
  /** Highest sequence number any of its records can refer to. */
  lastSeq: number;
}

/** A record as a journal line: its CRC-32 (8 hex digits), a space, the record, a newline. */
export function line(json: string): string {
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

/** Parses one line; undefined when it is not a whole, intact record. A P record's body is `json`. */
function parseLine(text: string): Record<string, unknown> | undefined {
  if (text.length < 11 || text[8] !== ' ') return undefined;
  const payload = text.slice(9);
  if (Number.parseInt(text.slice(0, 8), 16) !== crc32(payload)) return undefined;
  const tab = payload.indexOf('\t');
  try {
    const rec = JSON.parse(tab < 0 ? payload : payload.slice(0, tab)) as unknown;
    if (typeof rec !== 'object' || rec === null) return undefined;
    if (tab >= 0) (rec as Record<string, unknown>).json = payload.slice(tab + 1);
    return rec as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Sorted sequence numbers as [first, last] ranges. */
export function toRanges(seqs: number[]): [number, number][] {
  const ranges: [number, number][] = [];
  for (const s of seqs) {
    const last = ranges[ranges.length - 1];
    if (last && s === last[1] + 1) last[1] = s;
    else if (!last || s > last[1]) ranges.push([s, s]);
  }
  return ranges;
}

function isRanges(v: unknown): v is [number, number][] {
  return (
    Array.isArray(v) &&
    v.every(
      (r) =>
        Array.isArray(r) &&
        r.length === 2 &&
        Number.isSafeInteger(r[0]) &&
        Number.isSafeInteger(r[1]) &&
        (r[0] as number) <= (r[1] as number),
    )
  );
}

function isProduced(rec: Record<string, unknown>): boolean {
  return (
    Number.isSafeInteger(rec.seq) &&
    OUTPUTS.includes(rec.output as Output) &&
    typeof rec.group === 'string' &&
    typeof rec.properties === 'object' &&
    rec.properties !== null &&
    Number.isFinite(rec.producedAt) &&
    typeof rec.json === 'string'
  );
}

/**
 * An item's P record: its fields as JSON, a tab, its cached body JSON as it is (JSON.stringify
 * never writes a raw tab), so bodies are neither serialised again nor parsed at a restart.
 */
export function producedJson(it: Item): string {
  const { seq, output, group, properties, producedAt } = it;
  return `${JSON.stringify({ t: 'P', seq, output, group, properties, producedAt })}\t${it.json}`;
}

/**
 * Reads every segment in `dir`: what was waiting when the last process stopped or died, the
 * segments as found (for deletion) and the highest segment number.
 */
export async function readJournal(
  dir: string,
  logger: Logger,
): Promise<{ replay: Replay; segments: Segment[]; lastSegmentNo: number }> {
  let names: string[] = [];
  try {
    names = (await readdir(dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const replay: Replay = { journalId: undefined, nextSeq: 1, items: new Map(), open: undefined };
  const segments: Segment[] = [];
  let lastSegmentNo = 0;
  for (const name of names) {
    lastSegmentNo = Math.max(lastSegmentNo, Number(SEGMENT_NAME.exec(name)![1]));
    const file = path.join(dir, name);
    const seg: Segment = { file, lastSeq: 0 };
    segments.push(seg);
    const text = await readFile(file, 'utf8');
    const inSegment = new Set<number>();
    let openHere: OpenBatch | undefined;
    let pos = 0;
    while (pos < text.length) {
      const nl = text.indexOf('\n', pos);
      const rec = nl < 0 ? undefined : parseLine(text.slice(pos, nl));
      if (!rec) break;
      pos = nl + 1;
      if (rec.t === 'H' && typeof rec.id === 'string' && Number.isSafeInteger(rec.nextSeq)) {
        replay.journalId ??= rec.id;
        const next = rec.nextSeq as number;
        replay.nextSeq = Math.max(replay.nextSeq, next);
        seg.lastSeq = Math.max(seg.lastSeq, next - 1);
      } else if (rec.t === 'P' && isProduced(rec)) {
        const produced = rec as unknown as ProducedRecord;
        replay.items.set(produced.seq, produced);
        inSegment.add(produced.seq);
        replay.nextSeq = Math.max(replay.nextSeq, produced.seq + 1);
        seg.lastSeq = Math.max(seg.lastSeq, produced.seq);
      } else if (rec.t === 'D' && isRanges(rec.s)) {
        for (const [a, b] of rec.s) {
          if (b - a > replay.items.size) {
            for (const s of replay.items.keys()) if (s >= a && s <= b) replay.items.delete(s);
          } else {
            for (let s = a; s <= b; s++) replay.items.delete(s);
          }
        }
      } else if (rec.t === 'B' && typeof rec.id === 'string' && isRanges(rec.s)) {
        const seqs = rec.s.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i));
        replay.open = openHere = { id: rec.id, seqs };
      } else if (rec.t === 'C' && Number.isSafeInteger(rec.nextSeq)) {
        // A whole checkpoint: what older segments say is superseded.
        for (const s of replay.items.keys()) {
          if (s < (rec.nextSeq as number) && !inSegment.has(s)) replay.items.delete(s);
        }
        replay.open = openHere;
        for (const older of segments.slice(0, -1)) older.lastSeq = -1;
      }
    }
    if (pos < text.length) {
      logger.warn(
        { component: 'telemetry', segment: name, ignoredBytes: Buffer.byteLength(text.slice(pos)) },
        'telemetry journal: a record is cut off (the process died writing it) or fails its CRC; the rest of its segment is ignored',
      );
    }
  }
  if (replay.open && !replay.open.seqs.some((s) => replay.items.has(s))) replay.open = undefined;
  return { replay, segments, lastSegmentNo };
}
