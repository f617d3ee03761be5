import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { TelemetryBuffer, type Batch, type Item } from '../../src/telemetry/buffer.js';

let dir: string | undefined;
const open: TelemetryBuffer[] = [];
afterEach(async () => {
  for (const b of open.splice(0)) await b.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const FLUSH_MS = 20;

/**
 * A loaded buffer in a new data dir, or (`reopen`) a new one on the last dir, as after a restart.
 * The earlier buffer is not closed first: what a process that died had written is what counts.
 */
async function buffer(maxItems: number, reopen = false, logs?: string[]): Promise<TelemetryBuffer> {
  if (!reopen) dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-buffer-'));
  const logger = logs
    ? pino({ level: 'info' }, { write: (l: string) => void logs.push(l) })
    : pino({ level: 'silent' });
  const b = new TelemetryBuffer({ dataDir: dir!, maxItems, syncIntervalMs: FLUSH_MS, logger });
  open.push(b);
  await b.load();
  return b;
}

const result = (b: TelemetryBuffer, defect: boolean, n: number): Item =>
  b.push({
    output: 'results',
    group: String(defect),
    properties: {},
    json: JSON.stringify({ n }),
    bytes: 10,
    producedAt: 0,
  });

const ns = (items: Item[]): number[] => items.map((it) => (JSON.parse(it.json) as { n: number }).n);

/** Delivers everything waiting, message by message; returns the messages. */
function drain(b: TelemetryBuffer, maxItems = 100): Batch[] {
  const sent: Batch[] = [];
  for (let batch = b.peekBatch(maxItems, 1e6); batch; batch = b.peekBatch(maxItems, 1e6)) {
    sent.push(batch);
    b.delivered(batch);
  }
  return sent;
}

const journalDir = (): string => path.join(dir!, 'telemetry', 'journal');

it('interleaved ok and defect results still fill whole messages per group, and the account stays exact', async () => {
  const b = await buffer(1000);
  for (let i = 0; i < 40; i++) result(b, i % 4 === 0, i);
  const first = b.peekBatch(100, 1e6)!;
  expect(first.items.map((x) => x.group).every((g) => g === 'true')).toBe(true);
  expect(first.items).toHaveLength(10);
  b.delivered(first);
  const second = b.peekBatch(100, 1e6)!;
  expect(second.items).toHaveLength(30);
  expect(second.items.every((x) => x.group === 'false')).toBe(true);
  b.delivered(second);
  expect(b.account('results')).toEqual({ produced: 40, delivered: 40, dropped: 0, pending: 0 });
  expect(b.size).toBe(0);
});

it('events, stats and captures waiting together still go one per message: none is folded into another', async () => {
  const b = await buffer(1000);
  for (const [output, n] of [
    ['events', 1],
    ['captures', 2],
    ['captures', 3],
    ['events', 4],
    ['stats', 5],
    ['captures', 6],
  ] as const)
    b.push({ output, group: output, properties: {}, json: JSON.stringify({ n }), bytes: 8, producedAt: 0 });
  result(b, true, 7);
  result(b, true, 8);
  const sent = drain(b);
  expect(sent.map((m) => ns(m.items))).toEqual([[1], [2], [3], [4], [5], [6], [7, 8]]);
  expect(new Set(sent.map((m) => m.id)).size).toBe(sent.length);
  expect(b.account('captures')).toEqual({ produced: 3, delivered: 3, dropped: 0, pending: 0 });
});

it('an item dropped while its batch was in flight stays counted as dropped, never twice', async () => {
  const b = await buffer(5);
  for (let i = 0; i < 5; i++) result(b, false, i);
  const inFlight = b.peekBatch(100, 1e6)!;
  for (let i = 5; i < 8; i++) result(b, false, i); // drops the 3 oldest, which are in flight
  b.delivered(inFlight);
  const a = b.account('results');
  expect(a).toEqual({ produced: 8, delivered: 2, dropped: 3, pending: 3 });
  expect(a.produced).toBe(a.delivered + a.dropped + a.pending);
});

it('a closed buffer and a new one on its dir: same items, bodies and order, account per process', async () => {
  const b = await buffer(1000);
  for (let i = 0; i < 30; i++) result(b, i % 3 === 0, i);
  b.push({
    output: 'events',
    group: 'events',
    properties: { type: 'events', event: 'model-activated' },
    json: JSON.stringify({ event: 'model-activated', note: 'quotes " and \\ and ünïcode' }),
    bytes: 0,
    producedAt: 5,
  });
  b.delivered(b.peekBatch(5, 1e6)!); // the first 5 defect results (i = 0, 3, …, 12)
  const pendingBefore = [b.account('results').pending, b.account('events').pending];
  await b.close();

  const again = await buffer(1000, true);
  expect([again.account('results').produced, again.account('events').produced]).toEqual(pendingBefore);
  const restored = drain(again).flatMap((m) => m.items);
  expect(ns(restored.filter((it) => it.output === 'results')).sort((x, y) => x - y)).toEqual(
    [...Array(30).keys()].filter((n) => n % 3 !== 0 || n > 12),
  );
  const event = restored.find((it) => it.output === 'events')!;
  expect(JSON.parse(event.json)).toEqual({ event: 'model-activated', note: 'quotes " and \\ and ünïcode' });
  expect(event.properties).toEqual({ type: 'events', event: 'model-activated' });
  expect(event.bytes).toBe(Buffer.byteLength(event.json));
  // New items continue the sequence after the restored ones.
  expect(result(again, false, 99).seq).toBeGreaterThan(Math.max(...restored.map((it) => it.seq)));
});

it('what was pushed in an earlier event-loop turn is restored without any close (as after SIGKILL)', async () => {
  const b = await buffer(1000);
  for (let i = 0; i < 20; i++) result(b, false, i);
  const early = b.peekBatch(5, 1e6)!;
  b.delivered(early);
  await new Promise(setImmediate);
  const again = await buffer(1000, true);
  expect(again.account('results')).toMatchObject({ produced: 15, pending: 15 });
  expect(ns(drain(again).flatMap((m) => m.items))).toEqual([...Array(20).keys()].slice(5));
});

it('a message sent and not acknowledged before a crash goes out again with the same items under the same id', async () => {
  const b = await buffer(1000);
  for (let i = 0; i < 30; i++) result(b, false, i);
  const inFlight = b.peekBatch(10, 1e6)!;
  await b.sending(inFlight);
  for (let i = 30; i < 40; i++) result(b, false, i);
  await b.flush();
  // The same process retries with the same message …
  expect(b.peekBatch(100, 1e6)).toEqual(inFlight);

  // … and so does the next one, although it could now put 40 items in a message.
  const again = await buffer(1000, true);
  const resent = again.peekBatch(100, 1e6)!;
  expect(resent.id).toBe(inFlight.id);
  expect(resent.items.map((it) => it.json)).toEqual(inFlight.items.map((it) => it.json));
  again.delivered(resent);
  const rest = again.peekBatch(100, 1e6)!;
  expect(rest.id).not.toBe(inFlight.id);
  expect(ns(rest.items)).toEqual([...Array(40).keys()].slice(10));
  expect(rest.id.split('-')[0]).toBe(inFlight.id.split('-')[0]); // one journal id per data dir
});

it('items delivered or dropped before a crash are not restored', async () => {
  const b = await buffer(10);
  for (let i = 0; i < 14; i++) result(b, false, i); // 0–3 dropped
  b.delivered(b.peekBatch(3, 1e6)!); // 4–6 delivered
  await b.flush();
  const again = await buffer(10, true);
  expect(ns(drain(again).flatMap((m) => m.items))).toEqual([...Array(14).keys()].slice(7));
});

it('a torn or corrupt record ends what is read of its segment; later segments and new writes are kept', async () => {
  const logs: string[] = [];
  const b = await buffer(1000);
  for (let i = 0; i < 10; i++) result(b, false, i);
  await b.flush();
  const [segment] = await readdir(journalDir());
  // A record cut off where the process died, then one whose body changed on disk.
  await appendFile(path.join(journalDir(), segment!), '0badc0de {"t":"P","seq":11,"outp');
  const second = await buffer(1000, true, logs);
  expect(second.size).toBe(10);
  expect(logs.some((l) => l.includes('fails its CRC'))).toBe(true);
  for (let i = 10; i < 15; i++) result(second, false, i);
  await second.flush();

  const segments = (await readdir(journalDir())).sort();
  expect(segments).toHaveLength(2);
  const file = path.join(journalDir(), segments[1]!);
  const text = await readFile(file, 'utf8');
  await writeFile(file, text.replace('{"n":13}', '{"n":31}'));
  const third = await buffer(1000, true);
  expect(ns(drain(third).flatMap((m) => m.items))).toEqual([...Array(13).keys()]);
});

it('journal segments are deleted once everything in them was delivered', async () => {
  const b = await buffer(100_000);
  const body = JSON.stringify({ pad: 'x'.repeat(1000) });
  for (let i = 0; i < 20_000; i++) {
    b.push({ output: 'results', group: 'g', properties: {}, json: body, bytes: body.length, producedAt: 0 });
    if (i % 2000 === 0) b.flush().catch(() => undefined); // groups, as the timer would make them
  }
  await b.flush();
  expect((await readdir(journalDir())).length).toBeGreaterThan(2); // 8 MiB segments
  drain(b);
  await b.flush();
  await sleep(50); // deletions are not awaited
  expect(await readdir(journalDir())).toHaveLength(1);
  const again = await buffer(100_000, true);
  expect(again.size).toBe(0);
});

it('items spilled to pending.json by an earlier version are taken over, and its files deleted', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-buffer-'));
  const tdir = path.join(dir, 'telemetry');
  await mkdir(tdir, { recursive: true });
  const spilled = [3, 4, 5].map((seq) => ({
    seq,
    output: 'results',
    group: 'false|1',
    properties: { type: 'results', defect: 'false', modelVersion: '1' },
    bytes: 8,
    producedAt: 1,
    body: { n: seq },
  }));
  await writeFile(
    path.join(tdir, 'pending.json'),
    JSON.stringify({ version: 1, nextSeq: 9, items: spilled }),
  );
  await writeFile(path.join(tdir, 'pending.json.4242.tmp'), '{"version":1,"nextSeq":9,"it');
  const b = await buffer(1000, true);
  expect(await readdir(tdir)).toEqual(['journal']);
  expect(result(b, false, 9).seq).toBe(9);
  await b.flush();
  const again = await buffer(1000, true);
  expect(ns(drain(again).flatMap((m) => m.items))).toEqual([3, 4, 5, 9]);
});

it('a full buffer of 100,000 results is restored from the journal', async () => {
  const b = await buffer(100_000);
  const body = JSON.stringify({
    frameId: '0f8fad5b-d9cb-469f-a165-70867728950e',
    cameraId: 'line-3-top',
    model: { name: 'aoi-classifier', version: '12' },
    defect: false,
    classification: [
      { label: 'ok', score: 0.98 },
      { label: 'bridge', score: 0.01 },
    ],
    totalMs: 61.2,
    at: '2026-11-22T10:00:00.000Z',
  });
  for (let i = 0; i < 100_000; i++) {
    b.push({
      output: 'results',
      group: 'false|12',
      properties: {},
      json: body,
      bytes: body.length,
      producedAt: 0,
    });
  }
  await b.close();
  const started = performance.now();
  const again = await buffer(100_000, true);
  console.log(`restoring 100,000 journaled results: ${(performance.now() - started).toFixed(0)} ms`);
  expect(again.size).toBe(100_000);
  expect(again.peekBatch(1, 1e6)!.items[0]!.json).toBe(body);
});
