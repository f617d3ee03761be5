import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import azureIotDevice from 'azure-iot-device';
import { CaptureService } from './capture/service.js';
import type { Config } from './config.js';
import { consoleUrl, createConsole } from './console/console.js';
import { DriftMonitor } from './drift/monitor.js';
import { buildServer } from './http/server.js';
import { LayoutStore } from './layouts/store.js';
import { component, Lifecycle, type Component } from './lifecycle.js';
import { ModelFetcher } from './models/fetcher.js';
import { ModelManager, type LifecycleEvent } from './models/manager.js';
import { ModelStore } from './models/store.js';
import { ScoringEngine } from './scoring/engine.js';
import { configureTensorRt } from './scoring/providers.js';
import { ShadowTrial } from './shadow/trial.js';
import { TelemetryBuffer } from './telemetry/buffer.js';
import { Metrics } from './telemetry/metrics.js';
import { TelemetryPublisher } from './telemetry/publisher.js';
import { resultOf } from './telemetry/results.js';
import { DEFAULT_TELEMETRY } from './telemetry/settings.js';
import { DesiredFileWatcher, ReportedFileSink } from './twin/desired-file.js';
import { IotHubConnection } from './twin/iothub-connection.js';
import { directMethods } from './twin/methods.js';
import { DesiredStateReconciler } from './twin/reconciler.js';
import { ReportedProperties } from './twin/reported.js';
import { daemonInfo } from './version.js';

export interface App {
  readonly config: Readonly<Config>;
  readonly engine: ScoringEngine;
  readonly metrics: Metrics;
  readonly manager: ModelManager;
  readonly reconciler: DesiredStateReconciler;
  readonly reported: ReportedProperties;
  readonly store: ModelStore;
  readonly connection: IotHubConnection | undefined;
  /** Upstream telemetry; undefined in standalone mode, where there is nowhere to send it. */
  readonly publisher: TelemetryPublisher | undefined;
  /** The shadow trial of the desired `candidate` (README, "Shadow trial"). */
  readonly shadow: ShadowTrial;
  /** Drift of the active model's inputs and answers against its reference (docs/drift.md). */
  readonly drift: DriftMonitor;
  /** The direct methods, as IoT Hub invokes them. */
  readonly methods: ReturnType<typeof directMethods>;
  /** Capture for retraining (docs/capture.md). */
  readonly capture: CaptureService;
  /** The bound address once started (port resolved when PORT=0). */
  readonly address: { host: string; port: number } | undefined;
  /** Starts every component in order; the HTTP port opens last. Aborted by stop(). */
  start(): Promise<void>;
  /** Stops every component that started, in reverse order. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Wires the components and keeps their one ordered list (docs/architecture.md, "Start and
 * stop"). Start order: CA file, model cache, TensorRT settings, IoT Hub connection (in the
 * background), reported properties, upstream telemetry, scoring engine, the last-known-good model
 * (served before IoT Hub is reachable), the desired-state reconciler, the standalone desired file,
 * and last the HTTP listen, so an open port means ready to score. Stop runs the list in reverse:
 * close HTTP (503 to new requests, in-flight ones finish), stop model changes, drain scoring and
 * release the sessions, flush telemetry and reported properties, close the twin. One failing step
 * is logged while the others still run, and a stop during start aborts what is still starting.
 */
export function createApp(config: Readonly<Config>, logger: Logger): App {
  // azure-iot-device is CommonJS; under Node's ESM only its default export is reliable.
  const { ModuleClient } = azureIotDevice;
  const metrics = new Metrics();
  const engine = new ScoringEngine(config, logger, metrics);
  const layouts = new LayoutStore({ dataDir: config.dataDir, maxRegions: config.maxRegions, logger });
  const store = new ModelStore({ dataDir: config.dataDir, keep: config.modelCacheVersions, logger });
  let ca: string | undefined;
  const fetcher = new ModelFetcher({
    allowlist: config.modelUrlAllowlist,
    maxBytes: config.modelMaxBytes,
    timeoutMs: config.modelDownloadTimeoutMs,
    stallTimeoutMs: config.modelDownloadTimeoutMs,
    retries: config.modelDownloadRetries,
    backoffMs: config.modelDownloadBackoffMs,
    get ca() {
      return ca;
    },
    logger,
  });
  const reported = new ReportedProperties({
    minIntervalMs: config.reportedMinIntervalMs,
    retryMs: config.reportedRetryMs,
    logger,
  });
  const shadow = new ShadowTrial({
    engine,
    store,
    fetcher,
    metrics,
    logger,
    onReport: (report) => reported.set('candidate', report),
    reportIntervalMs: config.reportedMinIntervalMs,
  });
  const publisher =
    config.twinMode === 'standalone'
      ? undefined
      : new TelemetryPublisher({
          buffer: new TelemetryBuffer({
            dataDir: config.dataDir,
            maxItems: config.telemetryBufferItems,
            syncIntervalMs: config.telemetryJournalSyncMs,
            logger,
            onDrop: (item) => metrics.telemetryDropped.inc({ output: item.output }),
            onJournalError: () => metrics.telemetryJournalErrors.inc(),
          }),
          metrics,
          logger,
          settings: DEFAULT_TELEMETRY,
          sendTimeoutMs: config.telemetrySendTimeoutMs,
          maxMessagesPerSec: config.telemetryMaxMessagesPerSec,
          statsSource: () => ({
            queueRejections: engine.rejectedFrames,
            sections: { ...(shadow.report ? { candidate: shadow.report } : {}), drift: drift.stats() },
          }),
        });
  const drift = new DriftMonitor({
    registry: metrics.registry,
    logger,
    model: () => {
      const m = engine.state.model;
      // Read for every answered frame: no copy of the manifest.
      return (
        m && {
          name: m.manifest.name,
          version: m.manifest.version,
          sha256: m.sha256,
          reference: m.manifest.reference,
        }
      );
    },
    onEvent: (e) => publisher?.event(e),
    onReport: (r) => reported.set('drift', r),
  });
  const consoleUi = config.enableConsole
    ? createConsole({ config, engine, metrics, logger, reported: () => reported.document })
    : undefined;
  const onEvent = (event: LifecycleEvent): void => {
    logger.info({ component: 'events', ...event }, 'lifecycle event');
    publisher?.event(event);
    consoleUi?.history.event(event);
  };
  const manager = new ModelManager({
    engine,
    store,
    fetcher,
    metrics,
    logger,
    // Under IoT Hub the bundled demo model never answers a line unless MODEL_PATH names it.
    fallbackModelPath: config.twinMode === 'standalone' || config.modelPathSet ? config.modelPath : undefined,
    onReport: (report) => {
      reported.set('model', report);
      drift.modelChanged();
    },
    onEvent,
  });
  const reconciler = new DesiredStateReconciler({
    config,
    manager,
    reported,
    logger,
    onTelemetry: (settings) => publisher?.setSettings(settings),
    onCandidate: (candidate, settings) => void shadow.apply(candidate, settings),
    onCapture: (desired) => void capture.setSettings(desired).catch((err: unknown) => capture.fail(err)),
    onDrift: (desired) => drift.setSettings(desired),
    onLayouts: (desired) =>
      void layouts.applyTwin(desired).then(
        (report) => reported.set('layouts', report),
        (err: unknown) => logger.error({ component: 'layouts', err }, 'applying the twin layouts failed'),
      ),
    retryInitialMs: config.modelRetryMs,
  });
  const capture = new CaptureService({
    dir: CaptureService.dirIn(config.dataDir),
    logger,
    registry: metrics.registry,
    onReport: (r) => reported.set('capture', r),
    onCaptured: (m) => publisher?.capture(m),
    deviceId: config.deviceId ?? hostname(),
    connectionString: config.captureBlobConnectionString,
  });
  const methods = directMethods({ engine, manager, reconciler, reported, shadow });

  let connection: IotHubConnection | undefined;
  if (config.twinMode !== 'standalone') {
    connection = new IotHubConnection({
      createClient: (transport) =>
        config.twinMode === 'iotedge'
          ? ModuleClient.fromEnvironment(transport)
          : Promise.resolve(ModuleClient.fromConnectionString(config.iothubConnectionString!, transport)),
      get ca() {
        return config.twinMode === 'connection-string' ? ca : undefined;
      },
      logger,
      requestTimeoutMs: config.twinTimeoutMs,
      refreshIntervalMs: config.twinRefreshMs,
      backoffInitialMs: config.iothubBackoffInitialMs,
      backoffMaxMs: config.iothubBackoffMaxMs,
      methods,
    });
    const conn = connection;
    conn.on('desired', (doc) => {
      const version = typeof doc.$version === 'number' ? doc.$version : 0;
      consoleUi?.history.desiredReceived(doc, version);
      void reconciler.onDesired(doc, version);
    });
    conn.on('connected', () => {
      metrics.iothubConnected.set(1);
      reported.attach({ send: (patch) => conn.updateReported(patch) });
      publisher?.setSender(conn);
    });
    conn.on('disconnected', () => {
      metrics.iothubConnected.set(0);
      reported.attach(undefined);
      publisher?.setSender(undefined);
    });
  }
  const watcher = config.desiredPropertiesFile
    ? new DesiredFileWatcher({
        file: config.desiredPropertiesFile,
        intervalMs: config.desiredPropertiesPollMs,
        logger,
        onDesired: (doc, version) => {
          consoleUi?.history.desiredReceived(doc, version);
          void reconciler.onDesired(doc, version);
        },
        onInvalid: (err, version) => reconciler.reject(err, version),
      })
    : undefined;

  let server: FastifyInstance | undefined;
  let address: { host: string; port: number } | undefined;
  let unsubscribeTelemetry: (() => void) | undefined;
  let unsubscribeShadow: (() => void) | undefined;
  let unsubscribeCapture: (() => void) | undefined;
  let unsubscribeDrift: (() => void) | undefined;

  const components: Component[] = [
    component('ca', async () => {
      ca = config.iothubCaFile ? await readFile(config.iothubCaFile, 'utf8') : undefined;
    }),
    component('model-store', () => store.init()),
    component('tensorrt', () => configureTensorRt(config)),
    component(
      'iothub',
      () => connection?.start(),
      () => connection?.stop(),
    ),
    component(
      'reported',
      () => {
        reported.set('daemon', daemonInfo(new Date()));
        if (config.twinMode === 'standalone') {
          reported.attach(new ReportedFileSink(path.join(config.dataDir, 'reported.json')));
        }
      },
      () => reported.stop(),
    ),
    component(
      'telemetry',
      async () => {
        if (!publisher) return;
        await publisher.restore();
        publisher.start();
        publisher.event({ event: 'daemon-started', daemon: reported.document.daemon });
        unsubscribeTelemetry = engine.frames.subscribe('telemetry', (f) => publisher.result(resultOf(f)));
      },
      async () => {
        if (!publisher) return;
        // Frames answered while scoring drained reach the buffer before it is flushed.
        await engine.frames.idle();
        unsubscribeTelemetry?.();
        publisher.event({ event: 'daemon-stopping' });
        await publisher.stop(Math.min(config.telemetryFlushTimeoutMs, config.shutdownTimeoutMs / 2));
      },
    ),
    component(
      'capture',
      async () => {
        await capture.start();
        // Bounded by bytes too: frames wait here while sharp encodes raw buffers and the disk syncs.
        unsubscribeCapture = engine.frames.subscribe('capture', (f) => capture.handle(f), {
          maxPending: 64,
          maxPendingBytes: 256 * 1024 * 1024,
        });
      },
      async () => {
        await engine.frames.idle();
        unsubscribeCapture?.();
        await capture.stop();
      },
    ),
    component(
      'drift',
      () => {
        // A small queue: under load drift measures a sample of the line rather than a backlog.
        unsubscribeDrift = engine.frames.subscribe('drift', (f) => drift.handle(f), {
          maxPending: 16,
          maxPendingBytes: 64 * 1024 * 1024,
        });
      },
      () => unsubscribeDrift?.(),
    ),
    component(
      'layouts',
      () => layouts.start(),
      () => layouts.stop(),
    ),
    component(
      'engine',
      () => undefined,
      () => engine.stop(),
    ),
    component(
      'shadow',
      () => {
        shadow.start();
        // Only the frame's reference is queued; the trial sheds its own work (src/shadow/trial.ts).
        unsubscribeShadow = engine.frames.subscribe('shadow', (f) => shadow.onFrame(f), { maxPending: 64 });
      },
      async () => {
        unsubscribeShadow?.();
        await shadow.stop();
      },
    ),
    component(
      'models',
      (signal) => manager.start(reconciler.effectiveScoring, signal),
      () => manager.stop(),
    ),
    component(
      'reconciler',
      () => reconciler.start(),
      () => reconciler.stop(),
    ),
    component(
      'desired-file',
      () => watcher?.start(),
      () => watcher?.stop(),
    ),
    component(
      'console',
      () => consoleUi?.start(),
      () => consoleUi?.stop(),
    ),
    component(
      'http',
      async (signal) => {
        server = await buildServer({
          config,
          engine,
          metrics,
          logger,
          models: manager,
          capture,
          layouts,
          extraRoutes: consoleUi && (async (app) => app.register(consoleUi.routes, { models: manager })),
        });
        if (signal.aborted) return;
        await server.listen({ host: config.host, port: config.port });
        const a = server.server.address();
        if (a && typeof a === 'object') address = { host: a.address, port: a.port };
        logger.info(
          {
            component: 'app',
            ...address,
            ready: engine.ready,
            twinMode: config.twinMode,
            ...(consoleUi && address ? { console: consoleUrl(address) } : {}),
          },
          'edge-scorer listening',
        );
      },
      async () => {
        await server?.close();
      },
    ),
  ];
  const lifecycle = new Lifecycle(components, logger);
  let stopping: Promise<void> | undefined;

  return {
    config,
    engine,
    metrics,
    manager,
    reconciler,
    reported,
    store,
    connection,
    publisher,
    shadow,
    drift,
    methods,
    capture,
    get address() {
      return address;
    },
    start: () => lifecycle.start(),
    stop() {
      stopping ??= lifecycle.stop().then(() => logger.info({ component: 'app' }, 'edge-scorer stopped'));
      return stopping;
    },
  };
}
