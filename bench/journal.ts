/**
 * What the telemetry journal costs an answer (README, "The telemetry journal"): a daemon under the
 * IoT Hub emulator (real SDK over TLS on loopback) with every result sent upstream — each one
 * written to the journal, synced in groups, sent and acknowledged — against the same daemon with
 * results off, in alternating phases of one run (bench/ab.ts). The small 192×48 classifier keeps
 * inference short, so what each result costs around it shows.
 *
 *   node --import tsx bench/journal.ts [--rounds 3] [--requests 300] [--seconds 4] [--clients 8]
 */
import { writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { DEFAULT_TELEMETRY } from '../src/telemetry/settings.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { startIotHubEmulator } from '../test/helpers/iothub-emulator.js';
import { waitFor } from '../test/helpers/lifecycle.js';
import { abArgs, runAb } from './ab.js';
import { buildTinyClassifier, TINY_MANIFEST } from './tiny-model.js';

const opts = abArgs('bench/journal.ts', { rounds: 3, requests: 300, seconds: 4, clients: 8 });

const hub = await startIotHubEmulator({ desired: { telemetry: { results: 'all', flushIntervalMs: 200 } } });
const daemon = await startDaemon({
  model: buildTinyClassifier({ batch: 'dynamic' }),
  manifest: TINY_MANIFEST,
  env: { ...hub.env(), LOG_LEVEL: 'warn' },
});
const publisher = daemon.app.publisher!;
await waitFor(() => (daemon.app.connection?.state === 'connected' ? true : undefined), 'IoT Hub connection');
const noise = Buffer.from(Array.from({ length: 286 * 30 * 3 }, (_, i) => (i * 37) & 0xff));
const frame = await sharp(noise, { raw: { width: 286, height: 30, channels: 3 } })
  .png()
  .toBuffer();
const pending = (): number => publisher.buffer.account('results').pending;

const ab = await runAb({
  url: `${daemon.url}/v1/score`,
  frame,
  mediaType: 'image/png',
  ...opts,
  apply: async (on) =>
    publisher.setSettings({ ...DEFAULT_TELEMETRY, results: on ? 'all' : 'none', flushIntervalMs: 200 }),
  // Every result of an 'on' phase is delivered before the next phase starts.
  settle: async () => {
    await daemon.app.engine.frames.idle();
    await waitFor(() => (pending() === 0 ? true : undefined), 'results delivered', 120_000);
  },
  probe: async () => ({ delivered: publisher.buffer.account('results').delivered }),
});
const summary = {
  command: opts.command,
  frame: '286x30 PNG text crop, the 192x48 bench classifier, results to the IoT Hub emulator',
  ...ab,
  results: publisher.buffer.account('results'),
};
console.log(JSON.stringify({ ...summary, rows: undefined }, null, 2));
await writeFile(
  new URL('./results/journal-latest.json', import.meta.url),
  JSON.stringify(summary, null, 2) + '\n',
);
await daemon.stop();
await hub.close();
