import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import azureIotDevice from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import type { Config } from './config.js';
import { buildServer } from './http/server.js';
import { ScoringEngine } from './scoring/engine.js';
import { configureTensorRt } from './scoring/providers.js';
import { TelemetryBuffer } from './telemetry/buffer.js';
import { Metrics } from './telemetry/metrics.js';
import { TelemetryPublisher } from './telemetry/publisher.js';
import { DEFAULT_TELEMETRY } from './twin/desired.js';
import { DesiredFileWatcher, ReportedFileSink } from './twin/desired-file.js';
import { IotHubConnection } from './twin/iothub-connection.js';
import { directMethods } from './twin/methods.js';
import { ModelFetcher } from './twin/model-fetcher.js';
import { ModelManager, type LifecycleEvent } from './twin/model-manager.js';
import { ModelStore } from './twin/model-store.js';
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
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Reads the extra CA once; a missing file is a configuration error worth stopping for. */
async function readCa(file: string | undefined): Promise<string | undefined> {
  return file ? readFile(file, 'utf8') : undefined;
}

/**
 * Wires the components. Start order: model cache, last-known-good model (served before IoT Hub
 * is reachable), desired-state source (IoT Hub in the background, or the standalone file), and
 * last the HTTP listen, so an open port means ready to score. Stop runs in reverse: close HTTP
 * (503 to new requests, in-flight ones finish), stop model changes, drain scoring and release the
 * sessions, flush reported properties, close the twin. One failing step is logged while the others
 * still run.
 */
export function createApp(config: Readonly<Config>, logger: Logger): App {
  // azure-iot-device is CommonJS; under Node's ESM only its default export is reliable.
  const { ModuleClient } = azureIotDevice;
  const metrics = new Metrics();
  const engine = new ScoringEngine(config, logger, metrics);
  const store = new ModelStore({ dataDir: config.dataDir, keep: config.modelCacheVersions, logger });
  let ca: string | undefined;
  const fetcher = new ModelFetcher({
    allowlist: config.modelUrlAllowlist,
    maxBytes: config.modelMaxBytes,
    timeoutMs: config.modelDownloadTimeoutMs,
    stallTimeoutMs: config.modelDownloadTimeoutMs,
    retries: 5,
    backoffMs: 1000,
    get ca() {
      return ca;
    },
    logger,
  });
  const reported = new ReportedProperties({
    minIntervalMs: config.reportedMinIntervalMs,
    retryMs: 5000,
    logger,
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
          sendTimeoutMs: 30_000,
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
    logger,
    fallbackModelPath: config.modelPath,
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
      createClient: () =>
        config.twinMode === 'iotedge'
          ? ModuleClient.fromEnvironment(Mqtt)
          : Promise.resolve(ModuleClient.fromConnectionString(config.iothubConnectionString!, Mqtt)),
      get ca() {
        return config.twinMode === 'connection-string' ? ca : undefined;
      },
      logger,
      requestTimeoutMs: config.twinTimeoutMs,
      refreshIntervalMs: config.twinRefreshMs,
      backoffInitialMs: 1000,
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
        intervalMs: 1000,
        logger,
        onDesired: (doc, version) => void reconciler.onDesired(doc, version),
        onInvalid: (err, version) => reconciler.reject(err, version),
      })
    : undefined;

  let server: FastifyInstance | undefined;
  let address: { host: string; port: number } | undefined;
  let stopping: Promise<void> | undefined;

  const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
    const started = Date.now();
    try {
      await fn();
      logger.info({ component: 'app', step: name, durationMs: Date.now() - started }, 'stop step done');
    } catch (err) {
      logger.error({ component: 'app', step: name, err }, 'stop step failed');
    }
  };

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
    async start() {
      ca = await readCa(config.iothubCaFile);
      await store.init();
      await configureTensorRt(config);
      const daemon = daemonInfo(new Date());
      reported.set('daemon', daemon);
      reconciler.init();
      if (publisher) {
        await publisher.restore();
        publisher.start();
        publisher.event({ event: 'daemon-started', daemon });
      }
      await manager.start(reconciler.effectiveScoring);
      if (config.twinMode === 'standalone') {
        reported.attach(new ReportedFileSink(path.join(config.dataDir, 'reported.json')));
      }
      await watcher?.start();
      connection?.start();
      server = await buildServer({
        config,
        engine,
        metrics,
        logger,
        onResult: publisher && ((r) => publisher.result(r)),
      });
      await server.listen({ host: config.host, port: config.port });
      const a = server.server.address();
      if (a && typeof a === 'object') address = { host: a.address, port: a.port };
      logger.info(
        { component: 'app', ...address, ready: engine.ready, twinMode: config.twinMode },
        'edge-scorer listening',
      );
    },
    stop() {
      stopping ??= (async () => {
        await step('http', async () => {
          await server?.close();
        });
        await step('desired-file', () => watcher?.stop());
        reconciler.close();
        await step('model', () => manager.stop());
        await step('engine', () => engine.stop());
        await step('telemetry', async () => {
          publisher?.event({ event: 'daemon-stopping' });
          await publisher?.stop(Math.min(5000, config.shutdownTimeoutMs / 2));
        });
        await step('reported', () => reported.stop());
        await step('iothub', async () => {
          await connection?.stop();
        });
        logger.info({ component: 'app' }, 'edge-scorer stopped');
      })();
      return stopping;
    },
  };
}
