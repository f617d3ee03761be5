/**
 * `npm run soak -- --minutes 60`: the built daemon (dist/main.js, its own process) connected to
 * the IoT Hub emulator, under sustained load from line cameras, with periodic hot swaps through
 * the module twin and periodic broker restarts (with and without sessions). Every
 * `--sample-every` seconds it samples the daemon's RSS and open file descriptors (/proc), the
 * event-loop delay p99 (`edge_scorer_event_loop_delay_seconds{stat="p99"}`, reset at each scrape, so
 * it covers the interval since the previous sample) and the telemetry account (produced /
 * delivered / dropped / pending from /metrics, plus the frame ids the emulator received). At the
 * end: RSS slope (least squares after the warm-up), fd min/max, event-loop p99 max, and results
 * lost — frames answered 200 whose frameId never reached the emulator and that no drop accounts
 * for. Writes bench/results/soak-latest.{json,md} and prints the summary.
 *
 * Options: --minutes N (float), --clients 8, --rate 25 (frames/s per client; 0 = flat out),
 * --defect-every 50 (every n-th frame of a client is a defect),
 * --swap-every 60 (s), --restart-every 300 (s) (both shorter for runs under 8 and 15 minutes),
 * --restart-downtime 2 (s), --sample-every 10 (s),
 * --warmup S (default: the first cycle of broker restarts, 2 × restart-every, at most a third of
 * the run), --port P. The daemon runs with MALLOC_ARENA_MAX=2, as in the images; LD_PRELOAD,
 * MALLOC_CONF, MALLOC_MMAP_THRESHOLD_ and NODE_OPTIONS reach it (another allocator, --heapsnapshot-signal=SIGUSR2).
 * Each sample also reads V8's committed heap and external memory from /metrics, and the RSS slope
 * is split into the V8 heap's and the rest's (native).
 *
 * `runSoak(opts)` is the same run as a function (test/integration/soak.test.ts runs a short one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort } from '../test/helpers/child-daemon.js';
import { encodeFrame, solidFrame } from '../test/helpers/frames.js';
import { metricValue, parseMetrics, type Sample } from '../test/helpers/http.js';
import { startIotHubEmulator, type IotHubEmulator } from '../test/helpers/iothub-emulator.js';
import { desiredModel, versionedModel, waitFor } from '../test/helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../test/helpers/model-server.js';
import { writeModelDir } from '../test/helpers/onnx-builder.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = path.join(ROOT, 'dist', 'main.js');
const OUTPUTS = ['results', 'events', 'stats'] as const;
type Output = (typeof OUTPUTS)[number];

export interface SoakOptions {
  /** Length of the loaded phase, minutes (fractions allowed). */
  minutes: number;
  /** Concurrent camera clients. Default 8. */
  clients?: number;
  /** Frames per second per client; 0 sends as fast as answers come. Default 25. */
  ratePerClient?: number;
  /**
   * Every n-th frame of a client is a defect, the others are ok. Default 50 (2 %). Results of
   * both kinds go upstream (results: all) in separate messages, so this sets how many messages
   * the results need.
   */
  defectEvery?: number;
  /** A hot swap (desired model flips between two versions) every this many seconds. Default 60 (less in short runs). */
  swapEverySec?: number;
  /** A broker restart every this many seconds, alternately losing and keeping sessions. Default 300 (less in short runs). */
  restartEverySec?: number;
  /** How long the broker stays down at each restart, seconds. Default 2. */
  restartDowntimeSec?: number;
  /** Sampling period, seconds. Default 10. */
  sampleEverySec?: number;
  /**
   * Samples before this (seconds into the loaded phase) are left out of the RSS slope. Default:
   * the first cycle of broker restarts (2 × restartEverySec), at most a third of the run.
   */
  warmupSec?: number;
  /** HTTP port of the daemon; a free one by default. */
  port?: number;
  /** Progress lines; silent by default. */
  log?: (line: string) => void;
}

export interface Account {
  produced: number;
  delivered: number;
  dropped: number;
  pending: number;
}

export interface SoakSample {
  /** Seconds since the load started. */
  t: number;
  rssMiB: number;
  /** V8's committed heap and the memory of Buffers/ArrayBuffers outside it: the JS share of RSS. */
  heapTotalMiB: number;
  externalMiB: number;
  fds: number;
  eventLoopP99Ms: number;
  requests: { ok: number; failed: number };
  telemetry: Record<Output, Account>;
  /** Distinct frame ids of this run received on the emulator's `results` output so far. */
  upstreamResults: number;
  modelVersion: string | undefined;
  connected: boolean;
}

export interface SoakResult {
  date: string;
  options: Required<Omit<SoakOptions, 'log' | 'port'>>;
  durationSec: number;
  requests: { ok: number; failed: number; framesPerSec: number; firstFailures: string[] };
  swaps: {
    requested: number;
    /** Successful activations counted by the daemon during the loaded phase. */
    succeeded: number;
    /** Seconds from the desired change until a frame was answered by the new version. */
    latencySec: { median: number | null; max: number | null };
    unfinished: number;
  };
  brokerRestarts: { withSessions: number; withoutSessions: number };
  rss: {
    startMiB: number;
    endMiB: number;
    maxMiB: number;
    slopeMiBPerHour: number;
    /** Half-width of the slope's 95 % confidence interval; a slope inside ±this is no detectable trend. */
    slopeCi95MiBPerHour: number;
    samplesInSlope: number;
    /** Minutes between the first and last sample of the slope; under ~10 the warm-up dominates. */
    slopeSpanMin: number;
    /**
     * The same fit split in two: V8's committed JS heap (heap total), and the rest of RSS (native:
     * onnxruntime, libvips, OpenSSL, malloc arenas, code of the binary). Each with its 95 % interval.
     */
    jsHeapSlope: { slope: number; ci95: number };
    nativeSlope: { slope: number; ci95: number };
    /**
     * The post-warm-up window in thirds: median and max RSS, and median native (RSS − V8 heap), of
     * each. V8 grows its committed heap in steps and gives it back at some major GCs, so a slope
     * over one window can catch a rising step; a leak raises every third over the one before.
     */
    thirds: { medianMiB: number; maxMiB: number; nativeMedianMiB: number }[];
    /**
     * The RSS slope fitted to each half of the post-warm-up window on its own: a leak keeps its
     * slope in the second half, growth that levels off (a heap or arena reaching its working size)
     * does not. Meaningful from runs of about two hours; a half that starts just after V8 handed
     * its heap back shows the climb to its working size, so read it with the native slope.
     */
    halves: { slope: number; ci95: number }[];
  };
  fds: { start: number; end: number; min: number; max: number };
  eventLoopP99Ms: { max: number; median: number };
  telemetry: {
    /** The final account per output, read after the drain. */
    account: Record<Output, Account>;
    /** Whether produced = delivered + dropped + pending held for every output in every sample. */
    balancedInEverySample: boolean;
    /** Results produced per frame answered 200 (results: all, so 1 when exact). */
    producedPerOk: number;
    upstreamUnique: number;
    upstreamDuplicates: number;
    /** Results per `results` message received (batching efficiency). */
    resultsPerMessage: number;
    drainSec: number;
    /** Frames answered 200 whose result never arrived and that no drop or pending item explains. */
    lost: number;
  };
  daemon: { exit: number | string; stopSec: number; warnings: number; errors: number; topMessages: string[] };
  samples: SoakSample[];
}

/** Which frames were answered 200 and which results arrived upstream, per client, as bytes. */
class Ledger {
  private readonly ok: Uint8Array[] = [];
  private readonly upstream: Uint8Array[] = [];
  okCount = 0;
  failed = 0;
  messages = 0;
  upstreamUnique = 0;
  duplicates = 0;
  readonly failures: string[] = [];

  constructor(
    private readonly runId: string,
    clients: number,
  ) {
    for (let c = 0; c < clients; c++) {
      this.ok.push(new Uint8Array(1 << 16));
      this.upstream.push(new Uint8Array(1 << 16));
    }
  }

  id(client: number, n: number): string {
    return `${this.runId}-${client}-${n}`;
  }

  private static set(bits: Uint8Array[], client: number, n: number): boolean {
    let arr = bits[client]!;
    if (n >= arr.length) {
      const grown = new Uint8Array(Math.max(arr.length * 2, n + 1));
      grown.set(arr);
      bits[client] = arr = grown;
    }
    const was = arr[n] === 1;
    arr[n] = 1;
    return !was;
  }

  markOk(client: number, n: number): void {
    Ledger.set(this.ok, client, n);
    this.okCount++;
  }

  markFailed(what: string): void {
    this.failed++;
    if (this.failures.length < 20) this.failures.push(what);
  }

  /** Records a frame id seen upstream; ids of other runs are ignored. */
  markUpstream(frameId: string): void {
    const m = /^(.+)-(\d+)-(\d+)$/.exec(frameId);
    if (!m || m[1] !== this.runId) return;
    if (Ledger.set(this.upstream, Number(m[2]), Number(m[3]))) this.upstreamUnique++;
    else this.duplicates++;
  }

  /** Frames answered 200 whose result has not been seen upstream. */
  okNotUpstream(): number {
    let missing = 0;
    this.ok.forEach((bits, c) => {
      const up = this.upstream[c]!;
      for (let n = 0; n < bits.length; n++) if (bits[n] === 1 && up[n] !== 1) missing++;
    });
    return missing;
  }
}

/**
 * Least-squares slope of y over x, with the half-width of its 95 % confidence interval (normal
 * approximation; consecutive samples are correlated, so read it as a lower bound on the
 * uncertainty).
 */
function leastSquaresSlope(points: { x: number; y: number }[]): { slope: number; ci95: number } {
  const n = points.length;
  if (n < 3) return { slope: 0, ci95: Infinity };
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  if (sxx === 0) return { slope: 0, ci95: Infinity };
  const slope = sxy / sxx;
  const sse = points.reduce((s, p) => s + (p.y - my - slope * (p.x - mx)) ** 2, 0);
  return { slope, ci95: 1.96 * Math.sqrt(sse / (n - 2) / sxx) };
}

const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pick = (env: NodeJS.ProcessEnv, names: string[]): Record<string, string> =>
  Object.fromEntries(names.flatMap((n) => (env[n] === undefined ? [] : [[n, env[n]]])));

const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

function accountOf(samples: Sample[]): Record<Output, Account> {
  const of = (output: Output): Account => ({
    produced: metricValue(samples, 'edge_scorer_telemetry_items_produced_total', { output }),
    delivered: metricValue(samples, 'edge_scorer_telemetry_items_delivered_total', { output }),
    dropped: metricValue(samples, 'edge_scorer_telemetry_items_dropped_total', { output }),
    pending: metricValue(samples, 'edge_scorer_telemetry_buffer_items', { output }),
  });
  return { results: of('results'), events: of('events'), stats: of('stats') };
}

const balanced = (acc: Record<Output, Account>): boolean =>
  OUTPUTS.every((o) => acc[o].produced === acc[o].delivered + acc[o].dropped + acc[o].pending);

/** Runs one soak and returns its measurements; everything it started is stopped before it returns. */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const o: SoakResult['options'] = {
    minutes: opts.minutes,
    clients: opts.clients ?? 8,
    ratePerClient: opts.ratePerClient ?? 25,
    defectEvery: Math.max(1, opts.defectEvery ?? 50),
    // Short runs still see several swaps and restarts: at most every 60 s / 300 s, at least 8 / 2 per run.
    swapEverySec: opts.swapEverySec ?? Math.min(60, Math.max(5, (opts.minutes * 60) / 8)),
    restartEverySec: opts.restartEverySec ?? Math.min(300, Math.max(20, (opts.minutes * 60) / 3)),
    restartDowntimeSec: opts.restartDowntimeSec ?? 2,
    sampleEverySec: opts.sampleEverySec ?? 10,
    // Left out of the RSS slope: the first cycle of broker restarts (one with and one without
    // session), whose first-time allocations (TLS, a new client) are warm-up, not growth; at
    // most a third of the run.
    warmupSec: 0,
  };
  o.warmupSec = opts.warmupSec ?? Math.min(2 * o.restartEverySec + o.sampleEverySec, (opts.minutes * 60) / 3);
  const log = opts.log ?? ((): void => undefined);
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);

  const work = await mkdtemp(path.join(tmpdir(), 'edge-scorer-soak-'));
  const models = [versionedModel('7'), versionedModel('8')] as const;
  let hub: IotHubEmulator | undefined;
  let server: ModelServer | undefined;
  let child: ChildProcess | undefined;
  let exited: Promise<number | string> | undefined;
  let loading = true;
  let ingestTimer: NodeJS.Timeout | undefined;
  let clients: Promise<void>[] = [];
  const logFile = path.join(work, 'daemon.log');
  /** An error that carries the end of the daemon's log (the work dir is removed afterwards). */
  const failure = async (what: string): Promise<Error> => {
    const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n');
    return new Error(`${what}; the daemon's log ends with:\n${tail}`);
  };
  try {
    server = await startModelServer();
    const blocks = models.map((m) => desiredModel(server!, m));
    hub = await startIotHubEmulator({
      desired: {
        model: blocks[0]!,
        telemetry: { results: 'all', flushIntervalMs: 500, maxBatchMessages: 200, statsIntervalSec: 10 },
      },
    });
    const bundled = versionedModel('6');
    const fallback = await writeModelDir(path.join(work, 'fallback'), bundled.bytes, bundled.manifest);
    const port = opts.port ?? (await freePort());
    const base = `http://127.0.0.1:${port}`;
    const out = openSync(logFile, 'a');
    child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        ...hub.env(),
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
        DATA_DIR: path.join(work, 'data'),
        MODEL_PATH: fallback.modelPath,
        MODEL_URL_ALLOWLIST: `${server.origin}/`,
        EXECUTION_PROVIDERS: 'cpu',
        MAX_QUEUE: '512',
        TWIN_TIMEOUT_MS: '5000',
        IOTHUB_BACKOFF_MAX_MS: '5000',
        // As the images set it (Dockerfile.*): two malloc arenas instead of one per thread.
        MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
        // An allocator or setting for comparison (LD_PRELOAD=…libjemalloc.so.2, MALLOC_CONF, glibc's mmap threshold) reaches the daemon.
        ...pick(process.env, ['LD_PRELOAD', 'MALLOC_CONF', 'MALLOC_MMAP_THRESHOLD_', 'NODE_OPTIONS']),
      },
      stdio: ['ignore', out, out],
    });
    closeSync(out);
    const pid = child.pid!;
    exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
    let daemonGone = false;
    void exited.then(() => (daemonGone = true));

    const metrics = async (): Promise<Sample[]> => {
      const r = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) });
      if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
      return parseMetrics(await r.text());
    };
    const activeVersion = (s: Sample[]): string | undefined =>
      s.find((x) => x.name === 'edge_scorer_model_info' && x.value === 1)?.labels.version;
    await waitFor(
      async () => {
        if (daemonGone) return false;
        const s = await metrics();
        return metricValue(s, 'edge_scorer_iothub_connected') === 1 && activeVersion(s) === '7'
          ? true
          : undefined;
      },
      'daemon connected and serving version 7',
      60_000,
    ).catch(async (err: Error) => {
      throw await failure(err.message);
    });
    if (daemonGone) throw await failure(`the daemon exited during start-up (${String(await exited)})`);
    const h = hub;
    await h.waitForReported(
      (r) => (r.telemetry as { results?: string } | undefined)?.results === 'all',
      30_000,
    );

    // ---------------------------------------------------------------- load
    const runId = `soak${Date.now().toString(36)}`;
    const ledger = new Ledger(runId, o.clients);
    const frames = await Promise.all([
      encodeFrame(solidFrame(64, 48, 3, 30), 64, 48, 3, 'jpeg'), // ok
      encodeFrame(solidFrame(64, 48, 3, 200), 64, 48, 3, 'jpeg'), // defect
    ]);
    // Version changes as the cameras saw them, for the swap latency.
    const changes: { version: string; at: number }[] = [];
    let lastVersion: string | undefined;
    const t0 = Date.now();
    clients = Array.from({ length: o.clients }, async (_, c) => {
      const period = o.ratePerClient > 0 ? 1000 / o.ratePerClient : 0;
      let next = Date.now() + Math.random() * period;
      for (let n = 0; loading; n++) {
        if (period > 0) {
          next += period;
          const wait = next - Date.now();
          if (wait > 0) await sleep(wait);
          else if (wait < -1000) next = Date.now(); // fell behind: do not burst to catch up
        }
        const id = ledger.id(c, n);
        try {
          const r = await fetch(`${base}/v1/score`, {
            method: 'POST',
            body: frames[n % o.defectEvery === 0 ? 1 : 0],
            headers: { 'content-type': 'image/jpeg', 'x-frame-id': id, 'x-camera-id': `cam-${c}` },
            // A frame not answered in 30 s is a failure (the daemon's own request timeout is 30 s).
            signal: AbortSignal.timeout(30_000),
          });
          const text = await r.text();
          if (r.status === 200) {
            ledger.markOk(c, n);
            const v = (JSON.parse(text) as { model: { version: string } }).model.version;
            if (v !== lastVersion) changes.push({ version: v, at: Date.now() });
            lastVersion = v;
          } else {
            ledger.markFailed(`${id}: HTTP ${r.status} ${text.slice(0, 200)}`);
          }
        } catch (err) {
          ledger.markFailed(`${id}: ${String(err)}`);
        }
      }
    });

    const ingest = (): void => {
      const msgs = h.messages('results');
      h.clearMessages(); // same tick: nothing arrives in between; keeps the emulator's memory flat
      for (const m of msgs) {
        const body = JSON.parse(m.body.toString('utf8')) as { results: { frameId: string }[] };
        for (const r of body.results) ledger.markUpstream(r.frameId);
      }
      ledger.messages += msgs.length;
    };
    ingestTimer = setInterval(ingest, 1000);

    // ---------------------------------------------------------------- sampling
    const samples: SoakSample[] = [];
    let balancedAlways = true;
    const sample = async (): Promise<SoakSample> => {
      ingest();
      const [status, fdList, s] = await Promise.all([
        readFile(`/proc/${pid}/status`, 'utf8'),
        readdir(`/proc/${pid}/fd`),
        metrics(),
      ]);
      const telemetry = accountOf(s);
      if (!balanced(telemetry)) balancedAlways = false;
      const one: SoakSample = {
        t: round((Date.now() - t0) / 1000),
        rssMiB: round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024),
        heapTotalMiB: round(metricValue(s, 'edge_scorer_nodejs_heap_size_total_bytes') / 2 ** 20),
        externalMiB: round(metricValue(s, 'edge_scorer_nodejs_external_memory_bytes') / 2 ** 20),
        fds: fdList.length,
        eventLoopP99Ms: round(
          metricValue(s, 'edge_scorer_event_loop_delay_seconds', { stat: 'p99' }) * 1000,
          2,
        ),
        requests: { ok: ledger.okCount, failed: ledger.failed },
        telemetry,
        upstreamResults: ledger.upstreamUnique,
        modelVersion: activeVersion(s),
        connected: metricValue(s, 'edge_scorer_iothub_connected') === 1,
      };
      samples.push(one);
      log(
        `t=${one.t}s rss=${one.rssMiB}MiB heap=${one.heapTotalMiB}MiB external=${one.externalMiB}MiB fds=${one.fds} loopP99=${one.eventLoopP99Ms}ms ok=${one.requests.ok} ` +
          `failed=${one.requests.failed} pending=${one.telemetry.results.pending} upstream=${one.upstreamResults} ` +
          `model=${one.modelVersion} connected=${one.connected}`,
      );
      return one;
    };
    const firstSwaps = metricValue(await metrics(), 'edge_scorer_model_swaps_total', { outcome: 'success' });

    // ---------------------------------------------------------------- scenario
    const endAt = t0 + o.minutes * 60_000;
    const swaps: { at: number; version: string }[] = [];
    const restarts = { withSessions: 0, withoutSessions: 0 };
    let nextSample = t0 + o.sampleEverySec * 1000;
    let nextSwap = t0 + o.swapEverySec * 1000;
    let nextRestart = t0 + o.restartEverySec * 1000;
    while (Date.now() < endAt) {
      if (daemonGone) throw await failure(`the daemon exited during the soak (${String(await exited)})`);
      const now = Date.now();
      if (now >= nextSample) {
        nextSample += o.sampleEverySec * 1000;
        await sample();
      } else if (now >= nextSwap) {
        nextSwap += o.swapEverySec * 1000;
        const k = swaps.length + 1;
        h.updateDesired({ model: blocks[k % 2]! });
        swaps.push({ at: now, version: models[k % 2]!.version });
        log(`t=${round((now - t0) / 1000)}s swap to version ${models[k % 2]!.version}`);
      } else if (now >= nextRestart) {
        nextRestart += o.restartEverySec * 1000;
        // Alternately; the first one loses the sessions (azure-iot-sdk-node#1255, the harder case).
        const keepSessions = (restarts.withSessions + restarts.withoutSessions) % 2 === 1;
        log(`t=${round((now - t0) / 1000)}s broker restart (keepSessions ${String(keepSessions)})`);
        await h.stop();
        await sleep(o.restartDowntimeSec * 1000);
        await h.restart({ keepSessions });
        if (keepSessions) restarts.withSessions++;
        else restarts.withoutSessions++;
      } else {
        await sleep(Math.min(250, Math.max(1, Math.min(nextSample, nextSwap, nextRestart, endAt) - now)));
      }
    }
    const last = await sample(); // the last one under load
    loading = false;
    await Promise.all(clients);
    const loadedSec = (Date.now() - t0) / 1000;

    // ---------------------------------------------------------------- drain and account
    const drainStart = Date.now();
    let final = accountOf(await metrics());
    try {
      await waitFor(
        async () => {
          ingest();
          final = accountOf(await metrics());
          return final.results.pending === 0 && ledger.okNotUpstream() === 0 ? true : undefined;
        },
        'results drained',
        120_000,
      );
    } catch (err) {
      log(`drain incomplete: ${(err as Error).message}`);
    }
    ingest();
    const drainSec = (Date.now() - drainStart) / 1000;
    const endSwaps = metricValue(await metrics(), 'edge_scorer_model_swaps_total', { outcome: 'success' });
    final = accountOf(await metrics());
    const missing = ledger.okNotUpstream();
    const lost = Math.max(0, missing - final.results.dropped - final.results.pending);

    const stopStart = Date.now();
    child.kill('SIGTERM');
    const exit = await exited;
    const stopSec = (Date.now() - stopStart) / 1000;

    // Swap latency: from each request to the first answer by that version before the next request.
    const latencies: number[] = [];
    let unfinished = 0;
    for (const [i, sw] of swaps.entries()) {
      const nextAt = swaps[i + 1]?.at ?? Infinity;
      const seen = changes.find((c) => c.version === sw.version && c.at >= sw.at && c.at < nextAt);
      if (seen) latencies.push(round((seen.at - sw.at) / 1000, 2));
      else unfinished++;
    }

    const logText = await readFile(logFile, 'utf8').catch(() => '');
    const lines = logText
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        try {
          return JSON.parse(l) as { level?: number; msg?: string };
        } catch {
          return { level: 50, msg: l.slice(0, 200) };
        }
      });
    const notable = lines.filter((l) => (l.level ?? 0) >= 40);
    const counts = new Map<string, number>();
    for (const l of notable) counts.set(l.msg ?? '', (counts.get(l.msg ?? '') ?? 0) + 1);

    const warm = samples.filter((s) => s.t >= o.warmupSec);
    const fit = leastSquaresSlope(warm.map((s) => ({ x: s.t / 3600, y: s.rssMiB })));
    const native = (s: SoakSample): number => s.rssMiB - s.heapTotalMiB;
    const fitOf = (
      y: (s: SoakSample) => number,
      part: SoakSample[] = warm,
    ): { slope: number; ci95: number } => {
      const f = leastSquaresSlope(part.map((s) => ({ x: s.t / 3600, y: y(s) })));
      return { slope: round(f.slope, 2), ci95: round(f.ci95, 2) };
    };
    const half = Math.floor(warm.length / 2);
    const fds = samples.map((s) => s.fds);
    const lags = samples.map((s) => s.eventLoopP99Ms);
    const result: SoakResult = {
      date: new Date().toISOString(),
      options: o,
      durationSec: round(loadedSec),
      requests: {
        ok: ledger.okCount,
        failed: ledger.failed,
        framesPerSec: round(ledger.okCount / loadedSec),
        firstFailures: ledger.failures,
      },
      swaps: {
        requested: swaps.length,
        succeeded: endSwaps - firstSwaps,
        latencySec: { median: median(latencies), max: latencies.length ? Math.max(...latencies) : null },
        unfinished,
      },
      brokerRestarts: restarts,
      rss: {
        startMiB: samples[0]?.rssMiB ?? 0,
        endMiB: last.rssMiB,
        maxMiB: Math.max(...samples.map((s) => s.rssMiB)),
        slopeMiBPerHour: round(fit.slope, 2),
        slopeCi95MiBPerHour: round(fit.ci95, 2),
        samplesInSlope: warm.length,
        slopeSpanMin: warm.length > 1 ? round((warm[warm.length - 1]!.t - warm[0]!.t) / 60, 2) : 0,
        jsHeapSlope: fitOf((s) => s.heapTotalMiB),
        nativeSlope: fitOf(native),
        thirds: [0, 1, 2].map((i) => {
          const part = warm.slice(Math.floor((i * warm.length) / 3), Math.floor(((i + 1) * warm.length) / 3));
          return {
            medianMiB: round(median(part.map((s) => s.rssMiB)) ?? 0),
            maxMiB: round(Math.max(0, ...part.map((s) => s.rssMiB))),
            nativeMedianMiB: round(median(part.map(native)) ?? 0),
          };
        }),
        halves: [warm.slice(0, half), warm.slice(half)].map((part) => fitOf((s) => s.rssMiB, part)),
      },
      fds: { start: samples[0]?.fds ?? 0, end: last.fds, min: Math.min(...fds), max: Math.max(...fds) },
      eventLoopP99Ms: { max: Math.max(...lags), median: median(lags) ?? 0 },
      telemetry: {
        account: final,
        balancedInEverySample: balancedAlways && balanced(final),
        producedPerOk: round(final.results.produced / Math.max(1, ledger.okCount), 4),
        upstreamUnique: ledger.upstreamUnique,
        upstreamDuplicates: ledger.duplicates,
        resultsPerMessage: round((ledger.upstreamUnique + ledger.duplicates) / Math.max(1, ledger.messages)),
        drainSec: round(drainSec),
        lost,
      },
      daemon: {
        exit,
        stopSec: round(stopSec, 2),
        warnings: notable.filter((l) => l.level === 40).length,
        errors: notable.filter((l) => (l.level ?? 0) >= 50).length,
        topMessages: [...counts.entries()]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 8)
          .map(([msg, n]) => `${n}× ${msg}`),
      },
      samples,
    };
    return result;
  } finally {
    loading = false;
    await Promise.all(clients);
    clearInterval(ingestTimer);
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await hub?.close();
    await server?.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** The markdown summary of a run. */
export function soakMarkdown(r: SoakResult): string {
  const o = r.options;
  const t = r.telemetry;
  const rows = [
    [
      'Loaded phase',
      `${r.durationSec} s, ${o.clients} clients at ${o.ratePerClient || 'max'} frames/s each, every ${o.defectEvery}th frame a defect`,
    ],
    [
      'Frames answered 200 / failed',
      `${r.requests.ok} / ${r.requests.failed} (${r.requests.framesPerSec} frames/s)`,
    ],
    [
      'Hot swaps requested / succeeded',
      `${r.swaps.requested} / ${r.swaps.succeeded} (to first answer: median ${r.swaps.latencySec.median ?? '–'} s, max ${r.swaps.latencySec.max ?? '–'} s)`,
    ],
    [
      'Broker restarts',
      `${r.brokerRestarts.withSessions} with sessions, ${r.brokerRestarts.withoutSessions} without`,
    ],
    [
      'RSS',
      `start ${r.rss.startMiB} MiB, end ${r.rss.endMiB} MiB, max ${r.rss.maxMiB} MiB; slope ${r.rss.slopeMiBPerHour} ± ${r.rss.slopeCi95MiBPerHour} MiB/h ` +
        `(least squares, ${r.rss.samplesInSlope} samples over ${r.rss.slopeSpanMin} min after a ${round(o.warmupSec)} s warm-up` +
        `${r.rss.slopeSpanMin < 10 ? '; too short to tell a leak from warm-up' : ''})`,
    ],
    [
      'RSS slope split',
      `V8 heap (committed) ${r.rss.jsHeapSlope.slope} ± ${r.rss.jsHeapSlope.ci95} MiB/h; ` +
        `native (RSS − V8 heap) ${r.rss.nativeSlope.slope} ± ${r.rss.nativeSlope.ci95} MiB/h`,
    ],
    [
      'RSS by thirds after warm-up',
      r.rss.thirds
        .map((t) => `median ${t.medianMiB} / max ${t.maxMiB} MiB (native ${t.nativeMedianMiB})`)
        .join('; '),
    ],
    [
      'RSS slope by halves after warm-up',
      r.rss.halves.map((h) => `${h.slope} ± ${h.ci95} MiB/h`).join('; then '),
    ],
    ['Open fds', `start ${r.fds.start}, end ${r.fds.end}, min ${r.fds.min}, max ${r.fds.max}`],
    ['Event-loop delay p99', `max ${r.eventLoopP99Ms.max} ms, median ${r.eventLoopP99Ms.median} ms`],
    [
      'Results account',
      `produced ${t.account.results.produced} = delivered ${t.account.results.delivered} + dropped ${t.account.results.dropped} + pending ${t.account.results.pending}; balanced in every sample: ${t.balancedInEverySample}`,
    ],
    [
      'Results upstream',
      `${t.upstreamUnique} distinct frame ids, ${t.upstreamDuplicates} duplicates, ${t.resultsPerMessage} per message; drained in ${t.drainSec} s after the load`,
    ],
    ['**Results lost**', `**${t.lost}**`],
    [
      'Daemon stop',
      `exit ${r.daemon.exit} after ${r.daemon.stopSec} s; ${r.daemon.warnings} warnings, ${r.daemon.errors} errors logged`,
    ],
  ];
  const every = Math.max(1, Math.ceil(r.samples.length / 40));
  const table = r.samples
    .filter((_, i) => i % every === 0 || i === r.samples.length - 1)
    .map(
      (s) =>
        `| ${s.t} | ${s.rssMiB} | ${s.heapTotalMiB} | ${s.externalMiB} | ${s.fds} | ${s.eventLoopP99Ms} | ${s.requests.ok} | ${s.requests.failed} | ${s.telemetry.results.pending} | ${s.upstreamResults} | ${s.modelVersion ?? '–'} | ${s.connected ? 'yes' : 'no'} |`,
    );
  return [
    `# Soak ${r.date}`,
    '',
    '| | |',
    '| --- | --- |',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    '',
    ...(r.daemon.topMessages.length
      ? [`Most frequent warnings/errors: ${r.daemon.topMessages.join('; ')}`, '']
      : []),
    ...(r.requests.firstFailures.length
      ? [`First failures: ${r.requests.firstFailures.slice(0, 5).join('; ')}`, '']
      : []),
    '| t (s) | RSS (MiB) | JS heap (MiB) | external (MiB) | fds | loop p99 (ms) | ok | failed | pending | upstream | model | connected |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...table,
    '',
  ].join('\n');
}

function parseArgs(argv: string[]): SoakOptions {
  const value = (name: string): number | undefined => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return undefined;
    const v = Number(argv[i + 1]);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} needs a non-negative number`);
    return v;
  };
  const opts: SoakOptions = { minutes: value('minutes') ?? 60, log: (line) => console.log(line) };
  const set = <K extends keyof SoakOptions>(key: K, v: SoakOptions[K] | undefined): void => {
    if (v !== undefined) opts[key] = v;
  };
  set('clients', value('clients'));
  set('ratePerClient', value('rate'));
  set('defectEvery', value('defect-every'));
  set('swapEverySec', value('swap-every'));
  set('restartEverySec', value('restart-every'));
  set('restartDowntimeSec', value('restart-downtime'));
  set('sampleEverySec', value('sample-every'));
  set('warmupSec', value('warmup'));
  set('port', value('port'));
  return opts;
}

async function main(): Promise<void> {
  const result = await runSoak(parseArgs(process.argv.slice(2)));
  const dir = path.join(ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const md = soakMarkdown(result);
  await writeFile(path.join(dir, 'soak-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(path.join(dir, 'soak-latest.md'), md);
  console.log(`\n${md}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
