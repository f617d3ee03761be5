import { readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ProducedRecord } from './journal-records.js';
import { OUTPUTS } from './item.js';

/*
 * Versions before the journal spilled pending items to `<dataDir>/telemetry/pending.json` every
 * 2 s (through `pending.json.<pid>.tmp`, which a failed spill left behind). Their items are taken
 * over once by the journal, then both kinds of file are deleted.
 */

const PENDING = 'pending.json';

type Spilled = Omit<ProducedRecord, 'json'> & { body: unknown };

function isSpilled(v: unknown): v is Spilled {
  const it = v as Spilled | null;
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

/** The items of a spill file left by an earlier version, and its nextSeq; none when there is none. */
export async function readLegacyPending(dir: string): Promise<{ nextSeq: number; items: ProducedRecord[] }> {
  let snap: { version?: unknown; nextSeq?: unknown; items?: unknown };
  try {
    snap = JSON.parse(await readFile(path.join(dir, PENDING), 'utf8')) as typeof snap;
  } catch {
    return { nextSeq: 1, items: [] };
  }
  if (snap?.version !== 1 || !Array.isArray(snap.items)) return { nextSeq: 1, items: [] };
  const items = (snap.items as unknown[]).filter(isSpilled).map(({ body, ...it }) => ({
    ...it,
    producedAt: Number.isFinite(it.producedAt) ? it.producedAt : Date.now(),
    json: JSON.stringify(body),
  }));
  const nextSeq = Number.isSafeInteger(snap.nextSeq) ? (snap.nextSeq as number) : 1;
  return { nextSeq, items };
}

/** Deletes an earlier version's spill file and the temporary files of its spills. */
export async function removeLegacyPending(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  const legacy = names.filter((n) => n === PENDING || (n.startsWith(`${PENDING}.`) && n.endsWith('.tmp')));
  await Promise.all(legacy.map((n) => unlink(path.join(dir, n)).catch(() => undefined)));
}
