/**
 * Capture never delays an answer: the same daemon, the same frames, capture-all switched on and
 * off in alternating phases of one run (bench/ab.ts); reports the one-connection p50 and the
 * saturated throughput of each and their same-run ratios (bench/README.md, "Capture").
 *
 *   node --import tsx bench/capture.ts [--rounds 3] [--requests 200] [--seconds 3] [--clients 8]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import sharp from 'sharp';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { abArgs, runAb } from './ab.js';

const opts = abArgs('bench/capture.ts', { rounds: 3, requests: 200, seconds: 3, clients: 8 });

const dir = await mkdtemp(path.join(tmpdir(), 'edge-capture-bench-'));
const app = createApp(
  loadConfig({ HOST: '127.0.0.1', PORT: '0', DATA_DIR: dir, EXECUTION_PROVIDERS: 'cpu', LOG_LEVEL: 'warn' }),
  pino({ level: 'warn' }),
);
await app.start();
const raw = Buffer.alloc(640 * 480 * 3);
for (let i = 0; i < raw.length; i++) raw[i] = (i * 13) & 0xff;
const frame = await sharp(raw, { raw: { width: 640, height: 480, channels: 3 } })
  .jpeg({ quality: 85 })
  .toBuffer();

const ab = await runAb({
  url: `http://127.0.0.1:${app.address!.port}/v1/score`,
  frame,
  mediaType: 'image/jpeg',
  ...opts,
  apply: (on) =>
    app.capture.setSettings(
      on
        ? {
            enabled: true,
            rules: [{ reason: 'sample', rate: 1 }],
            perCameraPerHour: 1_000_000,
            perLabelPerHour: 1_000_000,
            upload: { target: 'none' },
          }
        : { enabled: false },
    ),
  settle: () => app.engine.frames.idle(),
  probe: async () => ({ stored: app.capture.store.count }),
});
const summary = {
  command: opts.command,
  frame: '640x480 JPEG, the bundled demo detector',
  ...ab,
  captured: app.capture.store.count,
  droppedByStream: (
    await app.metrics.registry.getSingleMetricAsString('edge_scorer_frame_stream_dropped_total')
  )
    .split('\n')
    .filter((l) => l.includes('subscriber="capture"')),
};
console.log(JSON.stringify({ ...summary, rows: undefined }, null, 2));
await writeFile(
  new URL('./results/capture-latest.json', import.meta.url),
  JSON.stringify(summary, null, 2) + '\n',
);
await app.stop();
await rm(dir, { recursive: true, force: true });
