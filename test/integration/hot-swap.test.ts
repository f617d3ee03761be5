import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, gradientFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';

let server: ModelServer | undefined;
let daemon: Daemon | undefined;
let desiredFile: string | undefined;

afterEach(async () => {
  await daemon?.stop();
  await server?.close();
  if (desiredFile) await rm(desiredFile, { force: true });
});

/**
 * Hot swaps under continuous load: 16 clients keep posting frames while the desired model flips
 * between two versions (cached after the first download, as a rollback would be). No request may
 * fail, and every answer names one of the two models.
 */
it('hot swaps under 16 concurrent clients drop no frame', async () => {
  const swaps = Number(process.env.HOT_SWAPS ?? 10);
  server = await startModelServer();
  desiredFile = path.join(tmpdir(), `edge-scorer-swap-${process.pid}-${Date.now()}.json`);
  const a = versionedModel('7');
  const b = versionedModel('8');
  const blocks = [desiredModel(server, a), desiredModel(server, b)];
  await writeFile(desiredFile, JSON.stringify({ model: blocks[0] }));
  daemon = await startDaemon({
    env: {
      DESIRED_PROPERTIES_FILE: desiredFile,
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      MAX_QUEUE: '256',
      WARMUP_RUNS: '1',
    },
  });
  const d = daemon;
  const version = async (): Promise<string | undefined> =>
    ((await request(`${d.url}/v1/model`)).json as { model?: { manifest: { version: string } } }).model
      ?.manifest.version;
  await waitFor(async () => ((await version()) === '7' ? true : undefined), 'first model');

  const frame = await encodeFrame(gradientFrame(320, 240), 320, 240, 3, 'jpeg');
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const seen = new Set<string>();
  const client = async (): Promise<void> => {
    while (!stop) {
      const r = await postFrame(`${d.url}/v1/score`, frame, 'image/jpeg');
      if (r.status === 200) {
        ok++;
        seen.add((r.json as { model: { version: string } }).model.version);
      } else failures.push(`${r.status} ${r.text}`);
    }
  };
  const clients = Array.from({ length: 16 }, client);

  for (let i = 1; i <= swaps; i++) {
    const target = i % 2 === 0 ? '7' : '8';
    await writeFile(desiredFile, JSON.stringify({ model: blocks[i % 2], scoring: { maxQueue: 256 + i } }));
    await waitFor(
      async () => ((await version()) === target ? true : undefined),
      `swap ${i} to ${target}`,
      30_000,
    );
  }
  const before = ok;
  await waitFor(() => (ok > before + 16 ? true : undefined), 'frames after the last swap');
  stop = true;
  await Promise.all(clients);

  expect(failures).toEqual([]);
  expect(ok).toBeGreaterThan(swaps * 4);
  expect([...seen].sort()).toEqual(['7', '8']);
  // Each swap went through the engine's activation path (plus the initial activation).
  const swapsCounted = (await request(`${d.url}/metrics`)).text.match(
    /edge_scorer_model_swaps_total\{outcome="success"\} (\d+)/,
  );
  expect(Number(swapsCounted?.[1])).toBeGreaterThanOrEqual(swaps + 1);
});
