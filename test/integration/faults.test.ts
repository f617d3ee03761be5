import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { freePort, MAIN, spawnDaemon, killIfRunning, type ChildDaemon } from '../helpers/child-daemon.js';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, rng, solidFrame } from '../helpers/frames.js';
import { metricValue, postFrame, request, scrape } from '../helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator } from '../helpers/iothub-emulator.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { writeModelDir } from '../helpers/onnx-builder.js';

/**
 * Faults on the wire and on the disk, with the real SDK against the IoT Hub emulator: after each
 * one the daemon scores frames again and the telemetry account balances (produced = delivered +
 * dropped + pending, read from /metrics), and every result of a frame scored 200 reaches the hub
 * (at least once; de-duplicated by frameId). Every frame here is a defect (grey 200 is the
 * `missing` class of the test classifier), so it produces a result whatever `telemetry.results`
 * is in force; the twin sets `all` as well.
 */

const run = promisify(execFile);
const OUTPUTS = ['results', 'events', 'stats'] as const;
type Output = (typeof OUTPUTS)[number];
interface Account {
  produced: number;
  delivered: number;
  dropped: number;
  pending: number;
}

const frame = await encodeFrame(solidFrame(32, 32, 3, 200), 32, 32, 3, 'png');
const v7 = versionedModel('7');
const v8 = versionedModel('8');

let hub: IotHubEmulator;
let server: ModelServer;
const daemons: Daemon[] = [];
/** Run after the daemons stopped, last registered first (unmounts, temp dirs). */
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  hub = await startIotHubEmulator({
    desired: {
      telemetry: { results: 'all', flushIntervalMs: 200, maxBatchMessages: 50, statsIntervalSec: 1 },
    },
  });
  server = await startModelServer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) {
    // A stop that hangs is a finding (see 'a start that fails…' below), not a hook timeout.
    const stopped = await Promise.race([d.stop().then(() => true), sleep(20_000).then(() => false)]);
    if (!stopped) throw new Error('the daemon did not stop within 20 s (IotHubConnection.stop() hangs)');
  }
  await hub.close();
  await server.close();
  for (const fn of cleanups.splice(0).reverse()) await fn();
}, 60_000);

async function start(env: Record<string, string> = {}, dir?: string): Promise<Daemon> {
  const d = await startDaemon({
    env: {
      ...hub.env(),
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      REPORTED_MIN_INTERVAL_MS: '50',
      TWIN_TIMEOUT_MS: '2000',
      IOTHUB_BACKOFF_MAX_MS: '1000',
      ...env,
    },
    ...(dir ? { dir } : {}),
  });
  daemons.push(d);
  return d;
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** A versioned test classifier made `padBytes` larger by an ONNX metadata entry. */
async function connected(d: Daemon, timeoutMs = 15_000): Promise<void> {
  await waitFor(
    () => (d.app.connection?.state === 'connected' ? true : undefined),
    'IoT Hub connection',
    timeoutMs,
  );
}

type ModelReport = { version?: string; sha256?: string; status?: string; lastError?: { code: string } };

function waitReportedModel(pred: (m: ModelReport) => boolean, what: string, timeoutMs = 20_000) {
  return hub
    .waitForReported((r) => pred((r.model ?? {}) as ModelReport), timeoutMs)
    .catch((err: Error) => {
      throw new Error(`${what}: ${err.message}`);
    });
}

const reportedModel = (): ModelReport => hub.reported().model ?? {};

async function servingVersion(d: Daemon): Promise<string | undefined> {
  const r = await request(`${d.url}/v1/model`);
  return (r.json as { model?: { manifest: { version: string } } }).model?.manifest.version;
}

/** The exact account of every output, from one /metrics scrape. */
async function accounts(d: Daemon): Promise<Record<Output, Account>> {
  const s = await scrape(d.url);
  const of = (output: Output): Account => ({
    produced: metricValue(s, 'edge_scorer_telemetry_items_produced_total', { output }),
    delivered: metricValue(s, 'edge_scorer_telemetry_items_delivered_total', { output }),
    dropped: metricValue(s, 'edge_scorer_telemetry_items_dropped_total', { output }),
    pending: metricValue(s, 'edge_scorer_telemetry_buffer_items', { output }),
  });
  return { results: of('results'), events: of('events'), stats: of('stats') };
}

function expectBalanced(acc: Record<Output, Account>): void {
  for (const o of OUTPUTS) {
    const a = acc[o];
    expect(a.produced, `${o}: ${JSON.stringify(a)}`).toBe(a.delivered + a.dropped + a.pending);
  }
}

/**
 * Cameras: `clients` loops posting the same defect frame with unique frame ids, a short pause
 * between frames. Every answer is recorded; anything but 200 is a failure.
 */
class FrameLoad {
  readonly ok: string[] = [];
  readonly failures: string[] = [];
  /** Answers per model version, in the order versions were first seen. */
  readonly versions = new Map<string, number>();
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(
    private readonly url: string,
    private readonly prefix: string,
    clients = 3,
    private readonly pauseMs = 25,
  ) {
    this.loops = Array.from({ length: clients }, (_, c) => this.loop(c));
  }

  private async loop(client: number): Promise<void> {
    for (let n = 0; this.running; n++) {
      const id = `${this.prefix}-${client}-${n}`;
      try {
        const r = await postFrame(`${this.url}/v1/score`, frame, 'image/png', { 'x-frame-id': id });
        if (r.status === 200) {
          this.ok.push(id);
          const v = (r.json as { model: { version: string } }).model.version;
          this.versions.set(v, (this.versions.get(v) ?? 0) + 1);
        } else {
          this.failures.push(`${id}: HTTP ${r.status} ${r.text}`);
        }
      } catch (err) {
        this.failures.push(`${id}: ${String(err)}`);
      }
      await sleep(this.pauseMs);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

/** Frame ids that arrived on the hub's `results` output, parsed incrementally. */
class Upstream {
  readonly ids = new Set<string>();
  duplicates = 0;
  private seen = 0;

  constructor(private readonly emulator: IotHubEmulator) {}

  update(): void {
    const msgs = this.emulator.messages('results');
    for (const m of msgs.slice(this.seen)) {
      for (const r of (JSON.parse(m.body.toString('utf8')) as { results: { frameId: string }[] }).results) {
        if (this.ids.has(r.frameId)) this.duplicates++;
        else this.ids.add(r.frameId);
      }
    }
    this.seen = msgs.length;
  }

  missing(ids: readonly string[]): string[] {
    this.update();
    return ids.filter((id) => !this.ids.has(id));
  }
}

/**
 * Waits until every id reached the hub and the results buffer is empty, then checks the account
 * of every output, no drops, and exactly one result produced per frame scored.
 */
async function expectAllDelivered(d: Daemon, ids: readonly string[], timeoutMs = 60_000): Promise<Upstream> {
  const up = new Upstream(hub);
  await waitFor(
    () => {
      const missing = up.missing(ids);
      if (missing.length > 0) {
        throw new Error(`${missing.length} of ${ids.length} results not upstream (e.g. ${missing[0]})`);
      }
      return true;
    },
    'every scored frame upstream',
    timeoutMs,
  );
  const acc = await waitFor(
    async () => {
      const a = await accounts(d);
      return a.results.pending === 0 ? a : undefined;
    },
    'results buffer drained',
    30_000,
  );
  expectBalanced(acc);
  expect(acc.results).toMatchObject({ produced: ids.length, delivered: ids.length, dropped: 0 });
  return up;
}

/** Logged connection failures of the IoT Hub loop: {time, retryInMs}. */
function connectFailures(d: Daemon): { time: number; retryInMs: number }[] {
  return d.logs
    .filter((l) => l.component === 'iothub' && typeof l.retryInMs === 'number')
    .map((l) => ({ time: l.time as number, retryInMs: l.retryInMs as number }));
}

/** Consecutive failures are spaced by at least the jittered backoff (≥ half the announced delay). */
function expectBackoff(failures: { time: number; retryInMs: number }[], maxMs: number): void {
  for (let i = 1; i < failures.length; i++) {
    const prev = failures[i - 1]!;
    expect(failures[i]!.time - prev.time).toBeGreaterThanOrEqual(prev.retryInMs / 2 - 20);
    expect(failures[i]!.retryInMs).toBeGreaterThanOrEqual(Math.min(prev.retryInMs, maxMs));
    expect(failures[i]!.retryInMs).toBeLessThanOrEqual(maxMs);
  }
}

/** The SDK's token provider behind the daemon's live client (private fields of azure-iot-device 1.18). */
function sdkTokenProvider(d: Daemon): { setTokenRenewalValues(validSec: number, marginSec: number): void } {
  type Provider = { setTokenRenewalValues?: (validSec: number, marginSec: number) => void };
  const conn = d.app.connection as unknown as {
    client?: { _transport?: { _authenticationProvider?: Provider } };
  };
  const provider = conn.client?._transport?._authenticationProvider;
  const set = provider?.setTokenRenewalValues;
  if (!provider || typeof set !== 'function') throw new Error('no SDK token provider on the live client');
  return { setTokenRenewalValues: (v, m) => set.call(provider, v, m) };
}

describe('broker faults', () => {
  it.each([
    ['with its sessions', true],
    ['without sessions', false],
  ])(
    'broker killed and restarted %s while frames are scored: every result arrives',
    async (_name, keepSessions) => {
      const d = await start();
      await connected(d);
      const acceptedBefore = hub.connects().filter((c) => c.accepted).length;
      const load = new FrameLoad(d.url, `broker-${String(keepSessions)}`);
      await sleep(1500);
      await hub.stop();
      const atStop = load.ok.length;
      await sleep(3000);
      expect(load.ok.length).toBeGreaterThan(atStop + 20); // scoring went on while the broker was gone
      const restarted = Date.now();
      await hub.restart({ keepSessions });
      // The daemon reads the whole twin again after the reconnect; without a session only a new
      // client (the SDK's does not subscribe again, azure-iot-sdk-node#1255) gets the answer.
      await hub.waitForTwinRequest(
        (r) => r.kind === 'get' && r.at >= restarted && r.answer === 'delivered',
        15_000,
      );
      await sleep(2000);
      await load.stop();
      expect(load.failures).toEqual([]);
      const up = await expectAllDelivered(d, load.ok);
      await connected(d);
      expect(hub.connects().filter((c) => c.accepted).length).toBeGreaterThan(acceptedBefore);
      console.log(
        `broker restart (keepSessions ${String(keepSessions)}): ${load.ok.length} frames, ${up.duplicates} duplicate results upstream`,
      );
    },
    90_000,
  );

  it('a broker that accepts TLS but never answers at start-up: scoring goes on, connects are retried, recovers when it answers', async () => {
    hub.setUnresponsive(true);
    const d = await start({ TWIN_TIMEOUT_MS: '1500' });
    const load = new FrameLoad(d.url, 'mute-start');
    // CONNECTs arrive (and are logged) but get no CONNACK: the open() deadline gives up and retries.
    await waitFor(() => (hub.connects().length >= 3 ? true : undefined), '3 unanswered CONNECTs', 30_000);
    expect(d.app.connection?.state).not.toBe('connected');
    expect(load.ok.length).toBeGreaterThan(0);
    expectBackoff(connectFailures(d), 1000);
    const resumed = Date.now();
    hub.setUnresponsive(false);
    await connected(d, 20_000);
    const recoveredMs = Date.now() - resumed;
    await sleep(1000);
    await load.stop();
    expect(load.failures).toEqual([]);
    await expectAllDelivered(d, load.ok);
    console.log(`unresponsive at start-up: connected ${recoveredMs} ms after the broker answered again`);
  }, 90_000);

  it('a broker that stops answering mid-run: scoring goes on; every result arrives once it answers again', async () => {
    const d = await start();
    await connected(d);
    const load = new FrameLoad(d.url, 'mute-mid');
    await sleep(1500);
    hub.setUnresponsive(true);
    const atMute = load.ok.length;
    await sleep(5000);
    expect(load.ok.length).toBeGreaterThan(atMute + 20);
    hub.setUnresponsive(false);
    const resumed = Date.now();
    await sleep(2000);
    await load.stop();
    expect(load.failures).toEqual([]);
    const up = await expectAllDelivered(d, load.ok, 90_000);
    console.log(
      `unresponsive mid-run: all results upstream ${Date.now() - resumed} ms after the broker answered again; ` +
        `${up.duplicates} duplicates`,
    );
  }, 150_000);
});

describe('TLS and credentials', () => {
  it('a trust bundle that did not sign the broker certificate: connects fail with backoff, scoring goes on, recovers once fixed', async () => {
    hub.setTrustBundle(hub.otherCaCert);
    const d = await start({ IOTHUB_BACKOFF_MAX_MS: '2000' });
    const load = new FrameLoad(d.url, 'tls');
    await waitFor(() => (connectFailures(d).length >= 4 ? true : undefined), '4 failed connects', 30_000);
    // The handshake fails before any CONNECT is read; every attempt fetched the trust bundle anew.
    expect(hub.connects()).toEqual([]);
    const bundles = hub.workloadRequests().filter((r) => r.path.startsWith('/trust-bundle')).length;
    expect(bundles).toBeGreaterThanOrEqual(4);
    expectBackoff(connectFailures(d), 2000);
    expect(connectFailures(d).map((f) => f.retryInMs)).toEqual(expect.arrayContaining([1000, 2000]));
    expect(load.ok.length).toBeGreaterThan(0);
    hub.setTrustBundle(hub.caCert);
    const fixed = Date.now();
    await connected(d, 10_000);
    const recoveredMs = Date.now() - fixed;
    expect(recoveredMs).toBeLessThan(2000 + 3000);
    await sleep(1000);
    await load.stop();
    expect(load.failures).toEqual([]);
    await expectAllDelivered(d, load.ok);
    console.log(`TLS mismatch: connected ${recoveredMs} ms after the trust bundle was fixed`);
  }, 90_000);

  /*
   * azure-iot-device renews SAS tokens itself: ModuleClient.fromEnvironment builds an
   * IotEdgeAuthenticationProvider without lifetimes, so SharedAccessKeyAuthenticationProvider's
   * defaults hold (tokenValidTimeInSeconds 3600, tokenRenewalMarginInSeconds 900): every 45 min a
   * new token is signed by the workload API and the MQTT transport reconnects with it (MqttBase
   * 'reconnecting': DISCONNECT, then CONNECT with the new password, same session). No environment
   * variable changes that and the daemon has no knob for it; the provider's public
   * setTokenRenewalValues() does (it renews at once, then every valid − margin seconds). The test
   * reaches the provider of the daemon's live client through the SDK's private fields.
   *
   * Such a reconnect emits no 'connect' on the client, so the daemon does not GET the twin after
   * it: a desired patch the hub publishes while the module is between the two connections is not
   * delivered (the hub does not keep desired notifications for a disconnected module, DESIGN.md
   * §1) and, here, never applied. The test publishes one exactly then.
   */
  it('SAS token renewal reconnects (every 2 s here) lose no result; a desired change made during one is applied', async () => {
    // The daemon catches what a renewal reconnect misses with its periodic twin GET; 1 s here.
    const d = await start({ TWIN_REFRESH_MS: '1000' });
    await connected(d);
    // Let the reported properties of the connect go out first: an answer due while the transport
    // reconnects is lost, and the twin deadline then recreates the client (with default lifetimes).
    await hub.waitForReported((r) => (r.telemetry as { results?: string } | undefined)?.results === 'all');
    await sleep(500);
    const signs = (): number => hub.workloadRequests().filter((r) => r.path.includes('/sign')).length;
    const accepted = (): number => hub.connects().filter((c) => c.accepted).length;
    const [signsBefore, acceptedBefore] = [signs(), accepted()];
    const load = new FrameLoad(d.url, 'sas');
    await sleep(500);
    sdkTokenProvider(d).setTokenRenewalValues(6, 4);
    // The first renewal: the old connection is closed when the new CONNECT is judged.
    await hub.waitForConnect((c) => c.accepted, 5000, hub.connects().length);
    const { deliveredTo, version } = hub.updateDesired({ model: desiredModel(server, v8) });
    expect(deliveredTo).toEqual([]); // the premise: published between the two connections
    await sleep(8500);
    // Renewals at once, then every 2 s: each one a signing and a new CONNECT on the same client.
    expect(signs() - signsBefore).toBeGreaterThanOrEqual(4);
    expect(accepted() - acceptedBefore).toBeGreaterThanOrEqual(4);
    expect(d.app.connection?.state).toBe('connected');
    await load.stop();
    expect(load.failures).toEqual([]);
    await expectAllDelivered(d, load.ok);
    console.log(
      `SAS renewal: ${signs() - signsBefore} tokens signed, ${accepted() - acceptedBefore} reconnects, ` +
        `${load.ok.length} frames; twin GETs after the first renewal: ` +
        `${hub.twinRequests().filter((r) => r.kind === 'get').length - 1}`,
    );
    const rep = await hub
      .waitForReported((r) => (r.desired as { version?: number } | undefined)?.version === version, 10_000)
      .catch(() => hub.reported());
    expect(rep.desired, 'desired $version acknowledged after the renewal reconnects').toMatchObject({
      version,
      status: 'applied',
    });
    await waitReportedModel((m) => m.version === '8' && m.status === 'active', 'v8 active', 10_000);
  }, 60_000);
});

describe('start-up without the hub', () => {
  it('edgeHub down for 60 s at start-up: the last known good model serves all along; connects within the backoff once up; desired state applied', async () => {
    hub.updateDesired({ model: desiredModel(server, v7) });
    const first = await start();
    await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
    const dir = first.dir;
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await first.app.stop();
    daemons.splice(daemons.indexOf(first), 1);

    await hub.stop();
    const { deliveredTo } = hub.updateDesired({ model: desiredModel(server, v8) });
    expect(deliveredTo).toEqual([]);
    const backoffMaxMs = 5000;
    const d = await start({ IOTHUB_BACKOFF_MAX_MS: String(backoffMaxMs) }, dir);
    expect((await request(`${d.url}/v2/health/ready`)).status).toBe(200);
    expect(await servingVersion(d)).toBe('7');
    const load = new FrameLoad(d.url, 'hub-down', 2, 100);
    await sleep(60_000);
    expect(d.app.connection?.state).not.toBe('connected');
    expect([...load.versions.keys()]).toEqual(['7']);
    const downFrames = load.ok.length;
    expect(downFrames).toBeGreaterThan(300);
    expectBackoff(connectFailures(d), backoffMaxMs);
    expect(Math.max(...connectFailures(d).map((f) => f.retryInMs))).toBe(backoffMaxMs);

    const up = Date.now();
    await hub.restart({ keepSessions: true });
    await connected(d, backoffMaxMs + 10_000);
    const connectMs = Date.now() - up;
    // Within one (capped) backoff delay plus the connect itself.
    expect(connectMs).toBeLessThan(backoffMaxMs + 2000);
    await waitReportedModel((m) => m.version === '8' && m.status === 'active', 'v8 after the hub came up');
    await waitFor(() => (load.versions.has('8') ? true : undefined), 'frames scored by v8');
    await load.stop();
    expect(load.failures).toEqual([]);
    expect([...load.versions.keys()]).toEqual(['7', '8']);
    await expectAllDelivered(d, load.ok);
    console.log(
      `hub down 60 s: ${downFrames} frames scored by the last known good model; connected ${connectMs} ms after the hub came up`,
    );
  }, 150_000);
});

describe('daemon start and restart', () => {
  /*
   * IotHubConnection.run() goes from a successful connectOnce() straight to waiting for wake();
   * stop() called while that connect was under way has already called wake() (then undefined)
   * and awaits the loop, which now waits for ever. main.ts stops the app without a deadline
   * when start() fails, so the process never exits (on SIGTERM, the shutdown deadline ends it
   * with exit code 1 after SHUTDOWN_TIMEOUT_MS instead).
   */
  it('a start that fails (HTTP port taken) while the IoT Hub connect is under way still exits, with code 1', async () => {
    expect(existsSync(MAIN), `${MAIN} is missing: run npm run build first`).toBe(true);
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => squatter.close(resolve)));
    const port = (squatter.address() as { port: number }).port;
    // CONNACK 3 (server unavailable): the SDK keeps retrying inside open() until it is accepted.
    hub.setAcceptConnections(false, 3);
    const dir = await tempDir('edge-scorer-startfail-');
    const child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        ...hub.env(),
        HOST: '127.0.0.1',
        PORT: String(port),
        DATA_DIR: path.join(dir, 'data'),
        EXECUTION_PROVIDERS: 'cpu',
        TWIN_TIMEOUT_MS: '20000',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    await waitFor(() => (out.includes('"msg":"start failed"') ? true : undefined), 'start failed', 30_000);
    // The connect is under way: refused CONNECTs, retried by the SDK inside open() …
    await hub.waitForConnect((c) => !c.accepted, 10_000);
    hub.setAcceptConnections(true); // … until this one is accepted
    const code = await Promise.race([exited, sleep(15_000).then(() => 'still running 15 s later')]);
    expect(code, out.split('\n').slice(-6).join('\n')).toBe(1);
  }, 60_000);

  it('a restart with results pending: the restored results count as produced again, so the account stays exact', async () => {
    const d = await start();
    await connected(d);
    await hub.stop();
    const ids = Array.from({ length: 10 }, (_, i) => `restart-${i}`);
    for (const id of ids) {
      const r = await postFrame(`${d.url}/v1/score`, frame, 'image/png', { 'x-frame-id': id });
      expect(r.status).toBe(200);
    }
    const dir = d.dir;
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await d.app.stop(); // graceful: the pending results stay in the journal under DATA_DIR
    daemons.splice(daemons.indexOf(d), 1);
    const again = await start({}, dir);
    const restored = await accounts(again);
    expect(restored.results.pending).toBe(ids.length);
    expectBalanced(restored);
    await hub.restart({ keepSessions: true });
    await connected(again);
    await expectAllDelivered(again, ids);
  }, 60_000);
});

describe('model download faults', () => {
  it('a model server that stalls mid-body: the download resumes and the swap completes; the old model serves throughout', async () => {
    hub.updateDesired({ model: desiredModel(server, v7) });
    const d = await start({ MODEL_DOWNLOAD_TIMEOUT_MS: '500' });
    await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
    const big = versionedModel('8', { padBytes: 300_000 });
    const block = desiredModel(server, big);
    const file = new URL(block.url as string).pathname;
    server.serve(file, big.bytes, { stallAfter: { bytes: 100_000, times: 2 } });
    const load = new FrameLoad(d.url, 'stall');
    await sleep(500);
    hub.updateDesired({ model: block });
    await waitReportedModel((m) => m.version === '8' && m.status === 'active', 'v8 after stalls', 30_000);
    await waitFor(() => (load.versions.has('8') ? true : undefined), 'frames scored by v8');
    await load.stop();
    expect(load.failures).toEqual([]);
    expect([...load.versions.keys()]).toEqual(['7', '8']);
    // Two stalled attempts, each resumed where the bytes stopped.
    const ranges = server.requests.filter((r) => r.path === file).map((r) => r.range);
    expect(ranges).toEqual([undefined, 'bytes=100000-', 'bytes=200000-']);
    expect(await readdir(path.join(d.dir, 'data', 'tmp'))).toEqual([]);
    await expectAllDelivered(d, load.ok);
  }, 60_000);

  it('disk full in DATA_DIR: the download fails with EDGE_ERR_STORAGE_FAILED and leaves nothing; journal writes fail and leave no temp file; scoring goes on; both recover with space', async (ctx) => {
    const dir = await tempDir('edge-scorer-diskfull-');
    const data = path.join(dir, 'data');
    await mkdir(data);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', data]);
    } catch (err) {
      ctx.skip(`cannot mount a tmpfs for DATA_DIR (needs root and mount permission): ${String(err)}`);
    }
    cleanups.push(() => run('umount', [data]));

    hub.updateDesired({ model: desiredModel(server, v7) });
    const d = await start({}, dir);
    await waitReportedModel((m) => m.version === '7' && m.status === 'active', 'v7 active');
    // Leave 64 KiB: the model below needs 300 KB, the results journaled below more than 64 KiB.
    const fs = await statfs(data);
    const filler = path.join(data, 'filler');
    await writeFile(filler, Buffer.alloc(fs.bavail * fs.bsize - 64 * 1024));
    const load = new FrameLoad(d.url, 'diskfull', 2);

    const big = versionedModel('8', { padBytes: 300_000 });
    hub.updateDesired({ model: desiredModel(server, big) });
    await waitReportedModel((m) => m.status === 'failed', 'download failed', 30_000);
    expect(reportedModel()).toMatchObject({ version: '7', lastError: { code: 'EDGE_ERR_STORAGE_FAILED' } });
    expect(await servingVersion(d)).toBe('7');
    expect(await readdir(path.join(data, 'tmp'))).toEqual([]);
    expect(await readdir(path.join(data, 'models'))).toEqual([v7.sha256]);

    // Results pile up while the hub is away; their journal no longer fits.
    await hub.stop();
    await waitFor(
      () => (d.logs.some((l) => l.component === 'telemetry' && l.level === 50) ? true : undefined),
      'a logged journal write failure',
      30_000,
    );
    const journalError = d.logs.find((l) => l.component === 'telemetry' && l.level === 50)!;
    expect((journalError.err as { code?: string }).code).toBe('ENOSPC');
    const atJournalFailure = load.ok.length;
    await sleep(1000);
    expect(load.ok.length).toBeGreaterThan(atJournalFailure + 10);
    expect(await servingVersion(d)).toBe('7');
    // Nothing is written to a temporary file: a failed write leaves only journal segments.
    const telemetryFiles = await readdir(path.join(data, 'telemetry'), { recursive: true });
    expect(telemetryFiles.filter((f) => !/^journal(\/\d{12}\.log)?$/.test(f))).toEqual([]);

    // Space again: the hub comes back, the results drain and the failed change is retried.
    await rm(filler);
    await hub.restart({ keepSessions: true });
    await waitReportedModel(
      (m) => m.version === '8' && m.status === 'active',
      'v8 once there is space',
      30_000,
    );
    await waitFor(() => (load.versions.has('8') ? true : undefined), 'frames scored by v8');
    await load.stop();
    expect(load.failures).toEqual([]);
    await expectAllDelivered(d, load.ok);
    console.log(
      `disk full: ${load.ok.length} frames scored; telemetry dir after the failed journal writes: ${JSON.stringify(telemetryFiles)}`,
    );
  }, 90_000);
});

describe('SIGKILL during download and swap', () => {
  it('killed at random points of ≥ 20 model changes, the built daemon always restarts on a complete last known good model', async () => {
    expect(existsSync(MAIN), `${MAIN} is missing: run npm run build first`).toBe(true);
    const seed = Number(process.env.FAULTS_SEED ?? Date.now() % 2 ** 31);
    const iterations = Number(process.env.FAULTS_KILL_ITERATIONS ?? 20);
    console.log(`SIGKILL test: seed ${seed} (replay with FAULTS_SEED=${seed}), ${iterations} iterations`);
    const random = rng(seed);

    const dir = await tempDir('edge-scorer-kill-');
    const data = path.join(dir, 'data');
    const desiredFile = path.join(dir, 'desired.json');
    const fallback = await writeModelDir(
      path.join(dir, 'fallback'),
      versionedModel('0').bytes,
      versionedModel('0').manifest,
    );
    const fallbackSha = sha256(await readFile(fallback.modelPath));
    // 300 KB each at 600 KB/s: half a second of download to be killed in.
    const models = [
      versionedModel('7', { padBytes: 300_000 }),
      versionedModel('8', { padBytes: 300_000 }),
    ] as const;
    const blocks = models.map((m) => {
      const block = desiredModel(server, m);
      server.serve(new URL(block.url as string).pathname, m.bytes, { slow: 600_000 });
      return block;
    });
    const known = new Set(models.map((m) => m.sha256));
    const env = {
      DATA_DIR: data,
      DESIRED_PROPERTIES_FILE: desiredFile,
      MODEL_PATH: fallback.modelPath,
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      MODEL_CACHE_VERSIONS: '1', // every change downloads again and prunes the other model
      EXECUTION_PROVIDERS: 'cpu',
      INTRA_OP_THREADS: '1',
      REPORTED_MIN_INTERVAL_MS: '0',
    };
    const port = await freePort();
    let child: ChildDaemon | undefined;
    cleanups.push(async () => {
      await killIfRunning(child);
    });
    const served = async (): Promise<string | undefined> =>
      ((await (await fetch(`${child!.url}/v1/model`)).json()) as { model?: { sha256: string } }).model
        ?.sha256;
    const reportedFileModel = async (): Promise<ModelReport> => {
      try {
        const rep = JSON.parse(await readFile(path.join(data, 'reported.json'), 'utf8')) as {
          model?: ModelReport;
        };
        return rep.model ?? {};
      } catch {
        return {};
      }
    };
    const settle = (sha: string): Promise<true> =>
      waitFor(
        async () =>
          (await served()) === sha && (await reportedFileModel()).status === 'active' ? true : undefined,
        `model ${sha.slice(0, 8)} active`,
        20_000,
      );
    const lastKnownGood = async (): Promise<string | undefined> => {
      try {
        const state = JSON.parse(await readFile(path.join(data, 'state.json'), 'utf8')) as {
          lastKnownGood: { sha256: string } | null;
        };
        return state.lastKnownGood?.sha256;
      } catch {
        return undefined;
      }
    };
    /** Hash-named model directories must be complete: their model.onnx hashes to the name. */
    const expectCompleteModels = async (when: string): Promise<string[]> => {
      const entries = await readdir(path.join(data, 'models'));
      for (const name of entries.filter((n) => /^[0-9a-f]{64}$/.test(n))) {
        const bytes = await readFile(path.join(data, 'models', name, 'model.onnx'));
        expect(sha256(bytes), `${when}: models/${name} is incomplete`).toBe(name);
      }
      return entries.filter((n) => !/^[0-9a-f]{64}$/.test(n));
    };

    await writeFile(desiredFile, JSON.stringify({ model: blocks[0] }));
    child = await spawnDaemon(env, port);
    await settle(models[0].sha256);

    const phases = new Map<string, number>();
    const started = Date.now();
    for (let i = 0; i < iterations; i++) {
      const target = models[(i + 1) % 2]!;
      await writeFile(desiredFile, JSON.stringify({ model: blocks[(i + 1) % 2] }));
      const delay = Math.floor(random() * 1600);
      await sleep(delay);
      child.kill('SIGKILL');
      expect(await child.exited).toBe('SIGKILL');

      // Dead: what the disk holds now is what the next start must cope with.
      const when = `iteration ${i} (seed ${seed}, killed after ${delay} ms)`;
      const lkg = await lastKnownGood();
      const leftovers = await expectCompleteModels(`${when}, after the kill`);
      const tmpLeft = await readdir(path.join(data, 'tmp'));
      const status = (await reportedFileModel()).status;
      const phase =
        lkg === target.sha256
          ? 'after the swap'
          : status === 'active'
            ? 'before the change started'
            : `while ${status}${tmpLeft.length > 0 ? ' (partial download)' : ''}`;
      phases.set(phase, (phases.get(phase) ?? 0) + 1);

      child = await spawnDaemon(env, port);
      await waitFor(
        async () => ((await fetch(`${child!.url}/v2/health/ready`)).status === 200 ? true : undefined),
        `${when}: ready after restart`,
        30_000,
      );
      const sha = await served();
      expect(known.has(sha ?? ''), `${when}: serves ${sha}`).toBe(true);
      // The last known good model serves at start-up; the desired change may already have followed.
      expect([lkg ?? fallbackSha, target.sha256], `${when}: serves ${sha}`).toContain(sha);
      // Nothing a killed process left half-done survives the start.
      const tmpNow = await readdir(path.join(data, 'tmp'));
      expect(
        tmpNow.filter((n) => tmpLeft.includes(n)),
        when,
      ).toEqual([]);
      const leftNow = await expectCompleteModels(`${when}, after the restart`);
      expect(
        leftNow.filter((n) => leftovers.includes(n)),
        when,
      ).toEqual([]);

      // The restarted daemon finishes the change; then nothing is half-done at all.
      await settle(target.sha256);
      expect(await readdir(path.join(data, 'tmp')), when).toEqual([]);
      expect(await expectCompleteModels(when), when).toEqual([]);
      expect(await lastKnownGood(), when).toBe(target.sha256);
    }
    console.log(
      `SIGKILL test: ${iterations} kills in ${Math.round((Date.now() - started) / 1000)} s; ` +
        `killed ${JSON.stringify(Object.fromEntries(phases))}`,
    );
  }, 300_000);
});
