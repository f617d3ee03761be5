import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import azureIotDevice from 'azure-iot-device';
import type { Config } from './config.js';
import { buildServer } from './http/server.js';
import { LayoutStore } from './layouts/store.js';
import { component, Lifecycle, type Component } from './lifecycle.js';
import { ModelFetcher } from './models/fetcher.js';
import { ModelManager, type LifecycleEvent } from './models/manager.js';
import { ModelStore } from './models/store.js';
import { ScoringEngine } from './scoring/engine.js';
import { configureTensorRt } from './scoring/providers.js';
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
  const publisher =
    config.twinMode === 'standalone'
      ? undefined
      : new TelemetryPublisher({
          buffer: new TelemetryBuffer({
            dataDir: config.dataDir,
            maxItems: config.telemetryBufferItems,
            spillIntervalMs: config.telemetrySpillIntervalMs,
            logger,
            onDrop: (item) => metrics.telemetryDropped.inc({ output: item.output }),
          }),
          metrics,
          logger,
          settings: DEFAULT_TELEMETRY,
          sendTimeoutMs: config.telemetrySendTimeoutMs,
          maxMessagesPerSec: config.telemetryMaxMessagesPerSec,
          statsSource: () => ({ queueRejections: engine.rejectedFrames }),
        });
  const onEvent = (event: LifecycleEvent): void => {
    logger.info({ component: 'events', ...event }, 'lifecycle event');
    publisher?.event(event);
  };
  const manager = new ModelManager({
    engine,
    store,
    fetcher,
    metrics,
    logger,
    // Under IoT Hub the bundled demo model never answers a line unless MODEL_PATH names it.
    fallbackModelPath: config.twinMode === 'standalone' || config.modelPathSet ? config.modelPath : undefined,
    onReport: (report) => reported.set('model', report),
    onEvent,
  });
  const reconciler = new DesiredStateReconciler({
    config,
    manager,
    reported,
    logger,
    onTelemetry: (settings) => publisher?.setSettings(settings),
    retryInitialMs: config.modelRetryMs,
  });
  const methods = directMethods({ engine, manager, reconciler, reported });

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
        onDesired: (doc, version) => void reconciler.onDesired(doc, version),
        onInvalid: (err, version) => reconciler.reject(err, version),
      })
    : undefined;

  let server: FastifyInstance | undefined;
  let address: { host: string; port: number } | undefined;
  let unsubscribeTelemetry: (() => void) | undefined;

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
      'http',
      async (signal) => {
        server = await buildServer({ config, engine, metrics, logger, models: manager, layouts });
        if (signal.aborted) return;
        await server.listen({ host: config.host, port: config.port });
        const a = server.server.address();
        if (a && typeof a === 'object') address = { host: a.address, port: a.port };
        logger.info(
          { component: 'app', ...address, ready: engine.ready, twinMode: config.twinMode },
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
