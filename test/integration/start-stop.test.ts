import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, MAIN } from '../helpers/child-daemon.js';
import { waitFor } from '../helpers/lifecycle.js';
import { buildSlowModel, writeModelDir } from '../helpers/onnx-builder.js';

/**
 * Start and stop are one ordered list (docs/architecture.md, "Start and stop"): a SIGTERM while
 * the first model is still loading aborts the start — the load is cancelled, the port is never
 * opened — and the daemon exits 0 well inside its deadline.
 */

let dir: string | undefined;

afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** True when something accepts a TCP connection on the port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('a stop during start', () => {
  it('SIGTERM while the first model is still loading exits 0 within the deadline; the port is never opened', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-start-stop-'));
    // ~200 ms an inference and 100 warm-up runs: the load takes tens of seconds.
    const { modelPath } = await writeModelDir(path.join(dir, 'model'), buildSlowModel({ batch: 1 }), {
      name: 'slow',
      version: '1',
      labels: ['ok', 'defect'],
      defectLabels: ['defect'],
    });
    const port = await freePort();
    const child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
        MODEL_PATH: modelPath,
        DATA_DIR: path.join(dir, 'data'),
        EXECUTION_PROVIDERS: 'cpu',
        INTRA_OP_THREADS: '1',
        WARMUP_RUNS: '100',
        SHUTDOWN_TIMEOUT_MS: '20000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    let portOpened = false;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        if (await accepts(port)) portOpened = true;
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    try {
      await waitFor(async () => (out.includes('loading the local model') ? true : undefined), 'load begun');
      // Well into the load (the first inference alone takes ~200 ms).
      await new Promise((r) => setTimeout(r, 1000));
      expect(out).not.toContain('model loaded and warmed');
      const signalledAt = performance.now();
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      const tookMs = performance.now() - signalledAt;
      // Keep watching a moment: a start that went on after the stop would open the port now.
      await new Promise((r) => setTimeout(r, 500));
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(tookMs).toBeLessThan(20_000);
      expect(out).not.toContain('edge-scorer listening');
      expect(out).not.toContain('model loaded and warmed');
      expect(out).toContain('edge-scorer stopped');
      expect(portOpened).toBe(false);
      expect(await accepts(port)).toBe(false);
    } finally {
      watching = false;
      await watcher;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
