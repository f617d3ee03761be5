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

async function buffer(maxItems: number): Promise<TelemetryBuffer> {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-buffer-'));
  return new TelemetryBuffer({
    dataDir: dir,
    maxItems,
    spillIntervalMs: 60_000,
    logger: pino({ level: 'silent' }),
  });
}

const result = (b: TelemetryBuffer, defect: boolean, n: number): Item =>
  b.push({ output: 'results', group: String(defect), properties: {}, body: { n }, bytes: 10, producedAt: 0 });

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
