/**
 * Capture never delays an answer: the same daemon, the same frames, capture-all switched on and
 * off in alternating phases of one run; reports the one-connection p50 and the saturated
 * throughput of each, and their same-run ratios (bench/README.md, "Capture").
 *
 *   node --import tsx bench/capture.ts [--rounds 3] [--requests 200] [--seconds 3] [--clients 8]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import sharp from 'sharp';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    requests: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '8' },
  },
});
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const SECONDS = Number(values.seconds);
const CLIENTS = Number(values.clients);

const dir = await mkdtemp(path.join(tmpdir(), 'edge-capture-bench-'));
const app = createApp(
  loadConfig({ HOST: '127.0.0.1', PORT: '0', DATA_DIR: dir, EXECUTION_PROVIDERS: 'cpu', LOG_LEVEL: 'warn' }),
  pino({ level: 'warn' }),
);
await app.start();
const url = `http://127.0.0.1:${app.address!.port}/v1/score`;
const raw = Buffer.alloc(640 * 480 * 3);
for (let i = 0; i < raw.length; i++) raw[i] = (i * 13) & 0xff;
const frame = await sharp(raw, { raw: { width: 640, height: 480, channels: 3 } })
  .jpeg({ quality: 85 })
  .toBuffer();

async function post(): Promise<void> {
  const res = await fetch(url, {
    method: 'POST',
    body: frame,
    headers: { 'content-type': 'image/jpeg', 'x-camera-id': 'cam-1' },
  });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  await res.arrayBuffer();
}

async function p50(): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const s = performance.now();
    await post();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}

async function throughput(): Promise<number> {
  let n = 0;
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < end) {
        await post();
        n++;
      }
    }),
  );
  return n / SECONDS;
}

const settings = (on: boolean) =>
  on
    ? {
        enabled: true,
        rules: [{ reason: 'sample' as const, rate: 1 }],
        perCameraPerHour: 1_000_000,
        perLabelPerHour: 1_000_000,
        upload: { target: 'none' as const },
      }
    : { enabled: false };

const rows: { round: number; capture: 'off' | 'on'; p50Ms: number; framesPerSec: number; stored: number }[] =
  [];
for (let r = 0; r < 5; r++) await post(); // warm-up
for (let round = 1; round <= ROUNDS; round++) {
  for (const on of round % 2 ? [false, true] : [true, false]) {
    await app.capture.setSettings(settings(on));
    const p = await p50();
    const fps = await throughput();
    await app.engine.frames.idle();
    rows.push({
      round,
      capture: on ? 'on' : 'off',
      p50Ms: Math.round(p * 100) / 100,
      framesPerSec: Math.round(fps * 10) / 10,
      stored: app.capture.store.count,
    });
    console.log(JSON.stringify(rows.at(-1)));
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const of = (c: 'on' | 'off', k: 'p50Ms' | 'framesPerSec') =>
  median(rows.filter((x) => x.capture === c).map((x) => x[k]));
// Noise: how much the phases with the same setting differ from each other in this run.
const spread = (c: 'on' | 'off', k: 'p50Ms' | 'framesPerSec') => {
  const xs = rows.filter((x) => x.capture === c).map((x) => x[k]);
  return (Math.max(...xs) - Math.min(...xs)) / median(xs);
};
const summary = {
  command: `node --import tsx bench/capture.ts --rounds ${ROUNDS} --requests ${REQUESTS} --seconds ${SECONDS} --clients ${CLIENTS}`,
  frame: '640x480 JPEG',
  p50Ms: {
    off: of('off', 'p50Ms'),
    on: of('on', 'p50Ms'),
    ratioOnOff: Math.round((of('on', 'p50Ms') / of('off', 'p50Ms')) * 1000) / 1000,
    spreadOff: Math.round(spread('off', 'p50Ms') * 1000) / 1000,
  },
  framesPerSec: {
    off: of('off', 'framesPerSec'),
    on: of('on', 'framesPerSec'),
    ratioOnOff: Math.round((of('on', 'framesPerSec') / of('off', 'framesPerSec')) * 1000) / 1000,
    spreadOff: Math.round(spread('off', 'framesPerSec') * 1000) / 1000,
  },
  captured: app.capture.store.count,
  droppedByStream: (
    await app.metrics.registry.getSingleMetricAsString('edge_scorer_frame_stream_dropped_total')
  )
    .split('\n')
    .filter((l) => l.includes('subscriber="capture"')),
  rows,
};
console.log(JSON.stringify(summary, null, 2));
await writeFile(
  new URL('./results/capture-latest.json', import.meta.url),
  JSON.stringify(summary, null, 2) + '\n',
);
await app.stop();
await rm(dir, { recursive: true, force: true });
