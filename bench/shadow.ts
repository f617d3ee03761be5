/**
 * `npm run bench:shadow`: what a shadow trial costs the line, as same-run ratios. One daemon
 * (in this process, standalone, its desired file rewritten between rounds) serves a ResNet-style
 * model; rounds alternate trial off / trial on (a second ResNet-style candidate at
 * `--sample-rate`, default 0.25), and each round measures
 *  (a) one connection, one frame at a time: p50 and p99 of the live answer;
 *  (b) saturated: `--connections` closed-loop clients (default 8): frames/s and failed answers;
 * then how many frames the candidate compared and shed. Alternating keeps slow drift (clocks,
 * neighbours) out of the ratio. The client runs in the daemon's process, the same for both
 * modes; bench/run.ts measures the daemon against a separate client.
 *
 * Options: --seconds N (per measurement, default 6), --rounds N (pairs, default 3),
 * --sample-rate R, --connections N. Writes bench/results/shadow-latest.json.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import sharp from 'sharp';
import { Pool } from 'undici';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { buildResNetLike, writeModelDir } from '../test/helpers/onnx-builder.js';
import { median } from './ab.js';
import { percentile } from './harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : fallback;
};
const SECONDS = option('seconds', 6);
const ROUNDS = option('rounds', 3);
const SAMPLE_RATE = option('sample-rate', 0.25);
const CONNECTIONS = option('connections', 8);

const manifest = (version: string): Record<string, unknown> => ({
  name: 'resnet-bench',
  version,
  task: 'classification',
  labels: ['ok', 'bridge', 'missing', 'shift'],
  defectLabels: ['bridge', 'missing', 'shift'],
  input: { width: 224, height: 224, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
  output: { format: 'probabilities', topK: 1 },
});

const round2 = (v: number): number => Math.round(v * 100) / 100;

async function makeFrames(count: number): Promise<Buffer[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) => {
      const w = 640;
      const h = 480;
      const raw = Buffer.alloc(w * h * 3);
      for (let p = 0; p < w * h; p++) {
        raw[p * 3] = (p * (i + 3)) & 255;
        raw[p * 3 + 1] = ((p >> 7) * (i + 1)) & 255;
        raw[p * 3 + 2] = 90 + i * 10;
      }
      return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer();
    }),
  );
}

async function send(pool: Pool, body: Buffer): Promise<{ ok: boolean; ms: number }> {
  const t0 = performance.now();
  try {
    const res = await pool.request({
      path: '/v1/score',
      method: 'POST',
      body,
      headers: { 'content-type': 'image/jpeg' },
    });
    await res.body.arrayBuffer();
    return { ok: res.statusCode === 200, ms: performance.now() - t0 };
  } catch {
    return { ok: false, ms: performance.now() - t0 };
  }
}

async function measure(
  origin: string,
  frames: Buffer[],
  connections: number,
  seconds: number,
): Promise<{ framesPerSec: number; p50Ms: number; p99Ms: number; failed: number }> {
  const pool = new Pool(origin, { connections, pipelining: 1 });
  let next = 0;
  const lat: number[] = [];
  let failed = 0;
  const end = performance.now() + seconds * 1000;
  try {
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (performance.now() < end) {
          const r = await send(pool, frames[next++ % frames.length]!);
          if (r.ok) lat.push(r.ms);
          else failed++;
        }
      }),
    );
  } finally {
    await pool.close();
  }
  lat.sort((a, b) => a - b);
  return {
    framesPerSec: lat.length / seconds,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    failed,
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-shadow-bench-'));
  const active = await writeModelDir(
    path.join(dir, 'active'),
    buildResNetLike({ batch: 'dynamic', width: 16, seed: 1 }),
    manifest('1'),
  );
  const candidateBytes = buildResNetLike({ batch: 'dynamic', width: 16, seed: 2 });
  const candidatePath = path.join(dir, 'candidate.onnx');
  await writeFile(candidatePath, candidateBytes);
  const candidate = {
    ...manifest('2'),
    url: `file://${candidatePath}`,
    sha256: createHash('sha256').update(candidateBytes).digest('hex'),
    sampleRate: SAMPLE_RATE,
  };
  const desiredFile = path.join(dir, 'desired.json');
  await writeFile(desiredFile, JSON.stringify({}));
  const config = loadConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    DATA_DIR: path.join(dir, 'data'),
    MODEL_PATH: active.modelPath,
    EXECUTION_PROVIDERS: 'cpu',
    DESIRED_PROPERTIES_FILE: desiredFile,
    DESIRED_PROPERTIES_POLL_MS: '50',
    MODEL_URL_ALLOWLIST: `file://${dir}/`,
    REPORTED_MIN_INTERVAL_MS: '200',
    MAX_QUEUE: '256',
    LOG_LEVEL: 'warn',
  });
  const app = createApp(config, pino({ level: 'warn' }));
  await app.start();
  const origin = `http://127.0.0.1:${app.address!.port}`;
  const frames = await makeFrames(8);
  const setTrial = async (on: boolean): Promise<void> => {
    await writeFile(desiredFile, JSON.stringify({ candidate: on ? candidate : null }));
    const end = Date.now() + 60_000;
    for (;;) {
      const status = app.shadow.report?.status;
      if (on ? status === 'active' : status === undefined) return;
      if (status === 'failed' || Date.now() > end) throw new Error(`candidate ${status ?? 'absent'}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const rounds: Record<string, unknown>[] = [];
  const byMode = {
    off: { p50: [] as number[], p99: [] as number[], fps: [] as number[] },
    on: { p50: [] as number[], p99: [] as number[], fps: [] as number[] },
  };
  let failed = 0;
  try {
    await measure(origin, frames, CONNECTIONS, 2); // warm-up
    for (let i = 0; i < ROUNDS * 2; i++) {
      const mode = i % 2 === 0 ? 'off' : 'on';
      await setTrial(mode === 'on');
      const one = await measure(origin, frames, 1, SECONDS);
      const sat = await measure(origin, frames, CONNECTIONS, SECONDS);
      failed += one.failed + sat.failed;
      byMode[mode].p50.push(one.p50Ms);
      byMode[mode].p99.push(one.p99Ms);
      byMode[mode].fps.push(sat.framesPerSec);
      const report = app.shadow.report;
      const row = {
        mode,
        oneConnection: { p50Ms: round2(one.p50Ms), p99Ms: round2(one.p99Ms) },
        saturated: { framesPerSec: round2(sat.framesPerSec), p50Ms: round2(sat.p50Ms) },
        candidate: report ? { compared: report.frames, shed: report.shed } : null,
      };
      rounds.push(row);
      console.log(JSON.stringify(row));
    }
  } finally {
    await app.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const result = {
    at: new Date().toISOString(),
    command: `npm run bench:shadow -- ${args.join(' ')}`.trim(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg().map(round2) },
    settings: { seconds: SECONDS, rounds: ROUNDS, sampleRate: SAMPLE_RATE, connections: CONNECTIONS },
    rounds,
    failedAnswers: failed,
    ratios: {
      oneConnectionP50OnOverOff: round2(median(byMode.on.p50) / median(byMode.off.p50)),
      oneConnectionP99OnOverOff: round2(median(byMode.on.p99) / median(byMode.off.p99)),
      saturatedFramesPerSecOnOverOff: round2(median(byMode.on.fps) / median(byMode.off.fps)),
      // Round-to-round spread with the trial off: what "within noise" means on this machine.
      offSpreadP50: round2(Math.max(...byMode.off.p50) / Math.min(...byMode.off.p50)),
      offSpreadFramesPerSec: round2(Math.max(...byMode.off.fps) / Math.min(...byMode.off.fps)),
    },
  };
  console.log(JSON.stringify(result.ratios, null, 2), `failed answers: ${failed}`);
  await mkdir(path.join(ROOT, 'bench', 'results'), { recursive: true });
  await writeFile(
    path.join(ROOT, 'bench', 'results', 'shadow-latest.json'),
    `${JSON.stringify(result, null, 2)}\n`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
