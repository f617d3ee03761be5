import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, spawnDaemon, killIfRunning, type ChildDaemon } from '../helpers/child-daemon.js';
import { encodeFrame, gradientFrame } from '../helpers/frames.js';
import { waitFor } from '../helpers/lifecycle.js';
import { buildSlowModel, writeModelDir } from '../helpers/onnx-builder.js';

/**
 * SIGTERM is how IoT Edge (docker stop) ends the module: the built daemon, under load from camera
 * clients, must finish every frame it accepted, refuse new ones with 503, stop in order and exit 0
 * before SHUTDOWN_TIMEOUT_MS; a second signal or the deadline forces the exit (src/main.ts).
 */

let child: ChildDaemon | undefined;
let dir: string | undefined;

afterEach(async () => {
  await killIfRunning(child);
  child = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** One request of a camera client, times from performance.now(). */
interface Outcome {
  sentAt: number;
  doneAt: number;
  status?: number;
  /** The error code of a 503 (or any non-200) body. */
  code?: string;
  /** The connection error (`cause.code` of fetch's TypeError) when no response came. */
  error?: string;
}

/** The connection errors a client may see for a request that reached a closing or closed port. */
const REFUSED = ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'];

async function startSlowDaemon(
  opts: { size: number; depth: number },
  env: Record<string, string>,
): Promise<{ daemon: ChildDaemon; frame: Uint8Array }> {
  dir = await mkdtemp(path.join(tmpdir(), 'edge-scorer-shutdown-'));
  const { modelPath } = await writeModelDir(
    path.join(dir, 'model'),
    buildSlowModel({ batch: 'dynamic', size: opts.size, depth: opts.depth }),
    { name: 'slow', version: '1', labels: ['ok', 'defect'], defectLabels: ['defect'] },
  );
  child = await spawnDaemon(
    {
      MODEL_PATH: modelPath,
      DATA_DIR: path.join(dir, 'data'),
      EXECUTION_PROVIDERS: 'cpu',
      MAX_QUEUE: '256',
      ...env,
    },
    await freePort(),
  );
  await waitFor(
    async () => ((await fetch(`${child!.url}/v2/health/ready`)).status === 200 ? true : undefined),
    'model ready',
  );
  const frame = await encodeFrame(gradientFrame(opts.size, opts.size), opts.size, opts.size, 3, 'png');
  return { daemon: child, frame };
}

async function score(url: string, frame: Uint8Array): Promise<Outcome> {
  const sentAt = performance.now();
  try {
    const res = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: frame,
      headers: { 'content-type': 'image/png' },
    });
    const text = await res.text();
    let code: string | undefined;
    if (res.status !== 200) {
      try {
        code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? `body: ${text}`;
      } catch {
        code = `body: ${text}`;
      }
    }
    return { sentAt, doneAt: performance.now(), status: res.status, code };
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return { sentAt, doneAt: performance.now(), error: cause?.code ?? cause?.message ?? String(err) };
  }
}

/** `clients` camera loops posting frames back to back until the port refuses them or `stop()`. */
function load(
  url: string,
  frame: Uint8Array,
  clients: number,
): { outcomes: Outcome[]; stop(): Promise<void> } {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const loops = Array.from({ length: clients }, async () => {
    while (!stopped) {
      const o = await score(url, frame);
      outcomes.push(o);
      if (o.error) break;
    }
  });
  return {
    outcomes,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** The pino lines of the daemon's output, parsed. */
function logLines(output: string): { msg: string; time: string; step?: string; [k: string]: unknown }[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; time: string; step?: string });
}

describe('graceful shutdown of the built daemon', () => {
  it('SIGTERM under load: accepted frames are answered, new ones refused, exit 0 in time, stop in order', async () => {
    const shutdownTimeoutMs = 10_000;
    const { daemon, frame } = await startSlowDaemon(
      { size: 64, depth: 4 },
      { SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs) },
    );
    const clients = load(daemon.url, frame, 8);
    await waitFor(() => (clients.outcomes.length >= 40 ? true : undefined), '40 frames scored under load');

    const killAt = performance.now();
    daemon.kill('SIGTERM');
    const code = await daemon.exited;
    const exitAt = performance.now();
    await clients.stop();

    // Independent properties: each is reported on its own when it fails.
    expect.soft(code, 'exit code of a graceful stop').toBe(0);
    expect.soft(exitAt - killAt, 'ms from SIGTERM to exit').toBeLessThan(shutdownTimeoutMs);
    expect
      .soft(daemon.output(), 'the graceful stop ran into its deadline')
      .not.toContain('graceful stop timed out');

    const { outcomes } = clients;
    // The test means something only if frames were in flight when the signal came.
    const inFlight = outcomes.filter((o) => o.sentAt < killAt && o.doneAt > killAt);
    expect(inFlight.length).toBeGreaterThan(0);
    expect
      .soft(inFlight.filter((o) => o.status === 200).length, 'in-flight frames scored')
      .toBeGreaterThan(0);
    // Sent before SIGTERM (with a margin for the bytes to reach the daemon on loopback): answered.
    const before = outcomes.filter((o) => o.sentAt < killAt - 20);
    expect
      .soft(
        before.filter((o) => o.status !== 200),
        'frames sent before SIGTERM not scored',
      )
      .toEqual([]);
    // Every answer at all is a score or our "not ready" error: never a 500, never fastify's own
    // 503 body (`{"error":"Service Unavailable",…}`, which return503OnClosing sends).
    const answered = outcomes.filter((o) => o.status !== undefined);
    expect
      .soft(
        answered.filter((o) => !(o.status === 200 || (o.status === 503 && o.code === 'EDGE_ERR_NOT_READY'))),
        'answers other than 200 and 503 EDGE_ERR_NOT_READY',
      )
      .toEqual([]);
    // Requests that found the port closing or closed were refused at the connection, never cut off.
    const refused = outcomes.filter((o) => o.error !== undefined);
    expect
      .soft(
        refused.filter((o) => !REFUSED.includes(o.error!)),
        'unexpected client errors',
      )
      .toEqual([]);
    expect
      .soft(
        refused.filter((o) => o.sentAt < killAt - 20),
        'requests cut off',
      )
      .toEqual([]);

    // Stop order: the signal, HTTP closed, scoring drained and released, stopped.
    const lines = logLines(daemon.output());
    const at = (pred: (l: (typeof lines)[number]) => boolean, what: string): number => {
      const l = lines.find(pred);
      expect(l, `log line "${what}"`).toBeDefined();
      return Date.parse(l!.time);
    };
    const stopping = at((l) => l.msg === 'stopping', 'stopping');
    const httpClosed = at((l) => l.step === 'http' && l.msg === 'stop step done', 'http closed');
    const engineStopped = at((l) => l.msg === 'engine stopped', 'engine stopped');
    const stopped = at((l) => l.msg === 'edge-scorer stopped', 'edge-scorer stopped');
    expect(stopping).toBeLessThanOrEqual(httpClosed);
    expect(httpClosed).toBeLessThanOrEqual(engineStopped);
    expect(engineStopped).toBeLessThanOrEqual(stopped);
    expect(lines.filter((l) => l.step === 'engine' && l.msg === 'stop step done')).toHaveLength(1);
  }, 60_000);

  it('a second SIGTERM while frames drain exits at once (SIGKILL of itself, status 137)', async () => {
    const { daemon, frame } = await startSlowDaemon({ size: 96, depth: 8 }, { SHUTDOWN_TIMEOUT_MS: '60000' });
    const clients = load(daemon.url, frame, 24);
    await waitFor(() => (clients.outcomes.length >= 8 ? true : undefined), 'frames scored under load');

    daemon.kill('SIGTERM');
    await waitFor(() => (daemon.output().includes('"msg":"stopping"') ? true : undefined), 'stopping logged');
    const secondAt = performance.now();
    daemon.kill('SIGTERM');
    const code = await daemon.exited;
    const exitMs = performance.now() - secondAt;
    await clients.stop();

    expect(daemon.output()).toContain('second signal: exiting now');
    expect.soft(code, 'forced exit after a second signal (src/main.ts)').toBe('SIGKILL');
    expect.soft(exitMs, 'ms from the second signal to exit').toBeLessThan(5000);
    // It did not wait for the drain.
    expect(daemon.output()).not.toContain('edge-scorer stopped');
  }, 60_000);

  it('the stop deadline forces the exit while a slow inference runs', async () => {
    const { daemon, frame } = await startSlowDaemon({ size: 96, depth: 8 }, { SHUTDOWN_TIMEOUT_MS: '100' });
    const clients = load(daemon.url, frame, 24);
    await waitFor(() => (clients.outcomes.length >= 8 ? true : undefined), 'frames scored under load');

    const killAt = performance.now();
    daemon.kill('SIGTERM');
    const code = await daemon.exited;
    const exitMs = performance.now() - killAt;
    await clients.stop();

    expect(daemon.output()).toContain('graceful stop timed out');
    expect.soft(code, 'forced exit after the stop deadline (src/main.ts)').toBe('SIGKILL');
    expect.soft(exitMs, 'ms from SIGTERM to exit').toBeLessThan(5000);
    expect(daemon.output()).not.toContain('edge-scorer stopped');
  }, 60_000);
});
