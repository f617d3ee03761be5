/**
 * `npm run swap-soak [-- --swaps 50 --clients 16]`: the built daemon (dist/, its own process) under
 * continuous load while its desired model flips between two versions. Reports failed requests and
 * the daemon's RSS after the 5th and the last swap (from /proc, so the load generator's memory is
 * not counted), and writes bench/results/swap-soak-latest.json.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeFrame, gradientFrame } from '../test/helpers/frames.js';
import { desiredModel, versionedModel, waitFor } from '../test/helpers/lifecycle.js';
import { startModelServer } from '../test/helpers/model-server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : fallback;
};
const SWAPS = option('swaps', 50);
const CLIENTS = option('clients', 16);
const PORT = option('port', 18181);

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  return Math.round((kb / 1024) * 10) / 10;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'edge-scorer-swap-soak-'));
  const server = await startModelServer();
  const desiredFile = path.join(work, 'desired.json');
  const blocks = [
    desiredModel(server, versionedModel('7', { width: 64 })),
    desiredModel(server, versionedModel('8', { width: 64 })),
  ];
  await writeFile(desiredFile, JSON.stringify({ model: blocks[0] }));
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/main.js')], {
    env: {
      ...process.env,
      PORT: String(PORT),
      DATA_DIR: path.join(work, 'data'),
      DESIRED_PROPERTIES_FILE: desiredFile,
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      EXECUTION_PROVIDERS: 'cpu',
      MAX_QUEUE: '512',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `http://127.0.0.1:${PORT}`;
  const version = async (): Promise<string | undefined> => {
    const r = await fetch(`${base}/v1/model`);
    return ((await r.json()) as { model?: { manifest: { version: string } } }).model?.manifest.version;
  };
  try {
    await waitFor(async () => ((await version()) === '7' ? true : undefined), 'first model', 60_000);
    const frame = await encodeFrame(gradientFrame(640, 480), 640, 480, 3, 'jpeg');
    let stop = false;
    let ok = 0;
    let failed = 0;
    const clients = Array.from({ length: CLIENTS }, async () => {
      while (!stop) {
        const r = await fetch(`${base}/v1/score`, {
          method: 'POST',
          body: frame,
          headers: { 'content-type': 'image/jpeg' },
        });
        await r.arrayBuffer();
        if (r.status === 200) ok++;
        else failed++;
      }
    });
    const rss: number[] = [];
    const started = Date.now();
    for (let i = 1; i <= SWAPS; i++) {
      const target = i % 2 === 0 ? '7' : '8';
      await writeFile(desiredFile, JSON.stringify({ model: blocks[i % 2] }));
      await waitFor(async () => ((await version()) === target ? true : undefined), `swap ${i}`, 60_000);
      // Let the previous runtime drain and release its sessions before sampling.
      await new Promise((r) => setTimeout(r, 300));
      rss.push(await rssMiB(child.pid!));
      if (i % 10 === 0) console.log(`swap ${i}: rss ${rss[i - 1]} MiB, ${ok} ok, ${failed} failed`);
    }
    stop = true;
    await Promise.all(clients);
    const after5 = rss[4]!;
    const afterLast = rss[rss.length - 1]!;
    const result = {
      date: new Date().toISOString(),
      swaps: SWAPS,
      clients: CLIENTS,
      seconds: Math.round((Date.now() - started) / 1000),
      requests: { ok, failed },
      rssMiB: {
        after5th: after5,
        afterLast,
        ratio: Math.round((afterLast / after5) * 1000) / 1000,
        all: rss,
      },
    };
    console.log(
      `${SWAPS} swaps under ${CLIENTS} clients: ${ok} frames ok, ${failed} failed; RSS after 5th ${after5} MiB, after ${SWAPS}th ${afterLast} MiB (×${result.rssMiB.ratio})`,
    );
    await mkdir(path.join(ROOT, 'bench/results'), { recursive: true });
    await writeFile(
      path.join(ROOT, 'bench/results/swap-soak-latest.json'),
      JSON.stringify(result, null, 2) + '\n',
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await server.close();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
