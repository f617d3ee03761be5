/**
 * `npm run bench:console`: what an open operator console costs the line. One run, one daemon
 * (dist/main.js, the bundled demo detector, standalone), saturated by closed-loop clients posting
 * the demo frame from 4 cameras; phases alternate between no page and a page with the live view
 * open (a client reading /v1/console/live, as the page does). It prints frames/s per phase, the
 * ratio of the means (page / no page) and the spread between phases of the same kind (the noise).
 *
 * Options: --seconds N (per phase, default 8), --rounds N (pairs of phases, default 3),
 * --connections N (default 8).
 */
import { readFile } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { freePort, killIfRunning, spawnDaemon, type ChildDaemon } from '../test/helpers/child-daemon.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : fallback;
};
const SECONDS = option('seconds', 8);
const ROUNDS = option('rounds', 3);
const CONNECTIONS = option('connections', 8);
const CAMERAS = ['cam-1', 'cam-2', 'cam-3', 'cam-4'];

const frame = await readFile(
  fileURLToPath(new URL('../models/default/demo/board-bridge.jpg', import.meta.url)),
);

/** Closed loop: every connection posts the next frame as soon as the last answer came. */
async function saturate(url: string, seconds: number): Promise<{ fps: number; errors: number }> {
  const pool = new Pool(url, { connections: CONNECTIONS, pipelining: 1 });
  const end = performance.now() + seconds * 1000;
  let done = 0;
  let errors = 0;
  let n = 0;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const camera = CAMERAS[n++ % CAMERAS.length]!;
      const res = await pool.request({
        path: '/v1/score',
        method: 'POST',
        headers: { 'content-type': 'image/jpeg', 'x-camera-id': camera },
        body: frame,
      });
      await res.body.dump();
      if (res.statusCode === 200) done++;
      else errors++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, loop));
  const elapsed = (performance.now() - start) / 1000;
  await pool.close();
  return { fps: done / elapsed, errors };
}

/** A page's live view: reads the event stream and counts the frames it is sent. */
function openPage(url: string): { frames: () => number; close: () => void } {
  const abort = new AbortController();
  let frames = 0;
  void (async () => {
    try {
      const res = await fetch(`${url}/v1/console/live`, { signal: abort.signal });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        frames += value.split('event: frame\n').length - 1;
      }
    } catch {
      // closed by the bench
    }
  })();
  return { frames: () => frames, close: () => abort.abort() };
}

const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
const spread = (xs: number[]): number => (Math.max(...xs) - Math.min(...xs)) / mean(xs);

const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-bench-console-'));
let daemon: ChildDaemon | undefined;
try {
  daemon = await spawnDaemon(
    { DATA_DIR: dir, EXECUTION_PROVIDERS: 'cpu', LOG_LEVEL: 'warn' },
    await freePort(),
  );
  console.log(`warm-up ${Math.min(4, SECONDS)} s…`);
  await saturate(daemon.url, Math.min(4, SECONDS));
  const off: number[] = [];
  const on: number[] = [];
  let liveFrames = 0;
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which comes first, so a drift over the run weighs on both alike.
    for (const withPage of r % 2 === 0 ? [false, true] : [true, false]) {
      const page = withPage ? openPage(daemon.url) : undefined;
      const { fps, errors } = await saturate(daemon.url, SECONDS);
      page?.close();
      if (page) liveFrames += page.frames();
      (withPage ? on : off).push(fps);
      console.log(
        `round ${r + 1} ${withPage ? 'page open ' : 'no page   '} ${fps.toFixed(1)} frames/s${errors ? ` (${errors} errors)` : ''}${page ? `, ${page.frames()} live frames sent to the page` : ''}`,
      );
    }
  }
  console.log(
    `\nsaturated, no page:   ${mean(off).toFixed(1)} frames/s (spread ${(spread(off) * 100).toFixed(1)} %)` +
      `\nsaturated, page open: ${mean(on).toFixed(1)} frames/s (spread ${(spread(on) * 100).toFixed(1)} %)` +
      `\nratio page/no page:   ${(mean(on) / mean(off)).toFixed(3)}; live frames sent: ${liveFrames}`,
  );
} finally {
  await killIfRunning(daemon);
  await rm(dir, { recursive: true, force: true });
}
