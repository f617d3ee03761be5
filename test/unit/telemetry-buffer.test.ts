import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { TelemetryBuffer, type Item } from '../../src/telemetry/buffer.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A buffer in a new data dir, or (`reopen`) a new buffer on the last one, as after a restart. */
async function buffer(maxItems: number, reopen = false): Promise<TelemetryBuffer> {
  if (!reopen) dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-buffer-'));
  return new TelemetryBuffer({
    dataDir: dir!,
    maxItems,
    spillIntervalMs: 60_000,
    logger: pino({ level: 'silent' }),
  });
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

it('interleaved ok and defect results still fill whole messages per group, and the account stays exact', async () => {
  const b = await buffer(1000);
  for (let i = 0; i < 40; i++) result(b, i % 4 === 0, i);
  const first = b.peekBatch(100, 1e6);
  expect(first.map((x) => x.group).every((g) => g === 'true')).toBe(true);
  expect(first).toHaveLength(10);
  b.delivered(first);
  const second = b.peekBatch(100, 1e6);
  expect(second).toHaveLength(30);
  expect(second.every((x) => x.group === 'false')).toBe(true);
  b.delivered(second);
  expect(b.account('results')).toEqual({ produced: 40, delivered: 40, dropped: 0, pending: 0 });
  expect(b.size).toBe(0);
});

it('an item dropped while its batch was in flight stays counted as dropped, never twice', async () => {
  const b = await buffer(5);
  for (let i = 0; i < 5; i++) result(b, false, i);
  const inFlight = b.peekBatch(100, 1e6);
  for (let i = 5; i < 8; i++) result(b, false, i); // drops the 3 oldest, which are in flight
  b.delivered(inFlight);
  const a = b.account('results');
  expect(a).toEqual({ produced: 8, delivered: 2, dropped: 3, pending: 3 });
  expect(a.produced).toBe(a.delivered + a.dropped + a.pending);
});

it('spills what is pending and a new buffer restores it: same items, bodies and order, account per process', async () => {
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
  b.delivered(b.peekBatch(5, 1e6)); // the first 5 defect results (i = 0, 3, …, 12)
  const pendingBefore = [b.account('results').pending, b.account('events').pending];
  await b.close();

  const again = await buffer(1000, true);
  expect(await again.load()).toBe(26);
  expect([again.account('results').produced, again.account('events').produced]).toEqual(pendingBefore);
  const restored: Item[] = [];
  for (let batch = again.peekBatch(100, 1e6); batch.length; batch = again.peekBatch(100, 1e6)) {
    restored.push(...batch);
    again.delivered(batch);
  }
  const ns = restored
    .filter((it) => it.output === 'results')
    .map((it) => (JSON.parse(it.json) as { n: number }).n);
  expect(ns.sort((x, y) => x - y)).toEqual([...Array(30).keys()].filter((n) => n % 3 !== 0 || n > 12));
  const event = restored.find((it) => it.output === 'events')!;
  expect(JSON.parse(event.json)).toEqual({ event: 'model-activated', note: 'quotes " and \\ and ünïcode' });
  expect(event.properties).toEqual({ type: 'events', event: 'model-activated' });
  expect(event.bytes).toBe(Buffer.byteLength(event.json));
  // New items continue the sequence after the restored ones.
  expect(result(again, false, 99).seq).toBeGreaterThan(Math.max(...restored.map((it) => it.seq)));
});

it('a full buffer of 100,000 results spills in chunks: the event loop keeps turning', async () => {
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
  // The longest the loop went without turning while the spill ran: one chunk of 1,000 items is a
  // few ms of work; serialising all 100,000 in one go held it for over 300 ms.
  let longest = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  await b.close();
  clearInterval(timer);
  console.log(`spill of 100,000 items: longest event-loop gap ${longest.toFixed(1)} ms`);
  expect(longest).toBeLessThan(100);
  const again = await buffer(100_000, true);
  expect(await again.load()).toBe(100_000);
});
