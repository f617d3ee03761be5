import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_MODEL_PATH } from '../../src/config.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator, type JsonObject } from '../helpers/iothub-emulator.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';

/**
 * A line never gets an answer from a model nobody deployed, and the twin never says "failed"
 * while the desired model serves (README, "Model lifecycle: the module twin"). Real
 * azure-iot-device-mqtt client against the IoT Hub emulator (TLS broker + workload API).
 */

let hub: IotHubEmulator;
let server: ModelServer;
const daemons: Daemon[] = [];

const v7 = versionedModel('7');
const v8 = versionedModel('8');
const frame = await encodeFrame(solidFrame(32, 32, 3, 200), 32, 32, 3, 'png');
const DEMO = 'aoi-solder-bridge-demo';

beforeEach(async () => {
  hub = await startIotHubEmulator();
  server = await startModelServer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await hub.close();
  await server.close();
});

async function start(extra: Record<string, string> = {}): Promise<Daemon> {
  const d = await startDaemon({
    env: {
      ...hub.env(),
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      REPORTED_MIN_INTERVAL_MS: '50',
      IOTHUB_BACKOFF_MAX_MS: '1000',
      ...extra,
    },
  });
  daemons.push(d);
  return d;
}

type ModelReport = { version?: string; status?: string; lastError?: { code: string } | null };
const modelOf = (r: JsonObject): ModelReport => r.model ?? {};

function waitReportedModel(pred: (m: ModelReport) => boolean, what: string): Promise<JsonObject> {
  return hub
    .waitForReported((r) => pred(modelOf(r)), 20_000)
    .catch((err: Error) => {
      throw new Error(`${what}: ${err.message}`);
    });
}

interface Answered {
  status: number;
  code?: string;
  model?: string;
}

/** Posts frames back to back until `stop()`, recording who answered each. */
function cameraLoop(url: string): { answers: Answered[]; stop: () => Promise<void> } {
  const answers: Answered[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await postFrame(`${url}/v1/score`, frame, 'image/png');
      const body = r.json as { model?: { name: string }; error?: { code: string } };
      answers.push({
        status: r.status,
        ...(body.error ? { code: body.error.code } : {}),
        ...(body.model ? { model: body.model.name } : {}),
      });
      if (r.status !== 200) await new Promise((res) => setTimeout(res, 20));
    }
  })();
  return {
    answers,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

describe('under IoT Hub, only a deployed model answers', () => {
  it('a first start with no cached model stays not ready (with the reason) until the twin model is active; the demo never answers', async () => {
    // MODEL_PATH empty = not set: the bundled demo model would be the fallback.
    const d = await start({ MODEL_PATH: '' });
    const camera = cameraLoop(d.url);
    try {
      const ready = await request(`${d.url}/v2/health/ready`);
      expect(ready.status).toBe(503);
      const model = await request(`${d.url}/v1/model`);
      expect(model.json).toMatchObject({ model: null });
      expect((model.json as { reason?: string }).reason).toMatch(/module twin/);
      const refused = await postFrame(`${d.url}/v1/score`, frame, 'image/png');
      expect(refused.status).toBe(503);
      expect(refused.json).toMatchObject({ error: { code: 'EDGE_ERR_NOT_READY' } });

      // Let the camera knock for a while: every answer is a 503 until the twin names a model.
      await new Promise((res) => setTimeout(res, 1500));
      hub.updateDesired({ model: desiredModel(server, v7) });
      await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
      await waitFor(
        async () => (camera.answers.some((a) => a.status === 200) ? true : undefined),
        'a frame answered by v7',
      );
    } finally {
      await camera.stop();
    }
    const answered = camera.answers.filter((a) => a.status === 200);
    const refused = camera.answers.filter((a) => a.status !== 200);
    expect(refused.length).toBeGreaterThan(5);
    expect(new Set(refused.map((a) => a.code))).toEqual(new Set(['EDGE_ERR_NOT_READY']));
    expect(answered.length).toBeGreaterThan(0);
    expect(new Set(answered.map((a) => a.model))).toEqual(new Set(['line-classifier']));
    expect((await request(`${d.url}/v1/model`)).json).not.toHaveProperty('reason');
  });

  it('the bundled demo serves under IoT Hub when MODEL_PATH names it explicitly', async () => {
    const d = await start({ MODEL_PATH: DEFAULT_MODEL_PATH });
    expect((await request(`${d.url}/v2/health/ready`)).status).toBe(200);
    const demoFrame = await encodeFrame(solidFrame(64, 64, 3, 40), 64, 64, 3, 'png');
    const r = await postFrame(`${d.url}/v1/score`, demoFrame, 'image/png');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ model: { name: DEMO } });
  });
});

describe('the reported model status follows the model that serves', () => {
  it('setting the desired model back to the serving version after a failed change reports active and clears lastError', async () => {
    hub.updateDesired({ model: desiredModel(server, v7) });
    const d = await start();
    await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
    hub.updateDesired({ model: desiredModel(server, v8, { sha256: 'cd'.repeat(32) }) });
    await waitReportedModel((m) => m.status === 'failed', 'v8 failed');
    expect(modelOf(hub.reported())).toMatchObject({ lastError: { code: 'EDGE_ERR_MODEL_HASH_MISMATCH' } });

    hub.updateDesired({ model: desiredModel(server, v7) });
    await waitReportedModel((m) => m.status === 'active', 'active again');
    // Reported `null` deletes a key in the twin: the failed attempt's error is gone.
    expect(modelOf(hub.reported())).toMatchObject({ version: '7', status: 'active' });
    expect(modelOf(hub.reported()).lastError).toBeUndefined();
    expect((await request(`${d.url}/v1/model`)).json).toMatchObject({ lastError: null });
    const r = await postFrame(`${d.url}/v1/score`, frame, 'image/png');
    expect(r.json).toMatchObject({ model: { version: '7' } });
  });

  it('going back to the serving version cancels the pending retry of a failed download', async () => {
    hub.updateDesired({ model: desiredModel(server, v7) });
    await start({ MODEL_RETRY_MS: '300' });
    await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
    const missing = desiredModel(server, v8);
    const file = new URL(missing.url as string).pathname;
    server.serve(file, v8.bytes, { status: { code: 404 } });
    hub.updateDesired({ model: missing });
    await waitReportedModel(
      (m) => m.status === 'failed' && m.lastError?.code === 'EDGE_ERR_MODEL_DOWNLOAD_FAILED',
      'v8 download failed',
    );
    // The daemon retries a failed download on its own; at least one retry has been made.
    await waitFor(
      async () => (server.requests.filter((q) => q.path === file).length >= 2 ? true : undefined),
      'a retry of the v8 download',
    );

    hub.updateDesired({ model: desiredModel(server, v7) });
    await waitReportedModel((m) => m.status === 'active' && m.version === '7', 'active again');
    expect(modelOf(hub.reported()).lastError).toBeUndefined();
    const tries = server.requests.filter((q) => q.path === file).length;
    // Ten retry periods later: no further attempt, and the report still says active.
    await new Promise((res) => setTimeout(res, 3000));
    expect(server.requests.filter((q) => q.path === file).length).toBe(tries);
    expect(modelOf(hub.reported())).toMatchObject({ version: '7', status: 'active' });
  });
});
