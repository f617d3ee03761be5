import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { Metrics } from '../telemetry/metrics.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import type { CaptureService } from '../capture/service.js';
import { captureRoutes } from './capture-routes.js';
import { clientErrorHandler, registerErrorHandling } from './errors.js';
import type { LayoutStore } from '../layouts/store.js';
import { healthRoutes } from './health-routes.js';
import { layoutRoutes } from './layout-routes.js';
import { metricsRoute } from './metrics-route.js';
import { modelRoutes, type ModelStatusSource } from './model-routes.js';
import { scoreRoutes } from './score-routes.js';

export interface ServerDeps {
  config: Readonly<Config>;
  engine: ScoringEngine;
  metrics: Metrics;
  logger: Logger;
  /** The model lifecycle's status and last error (their one owner). */
  models: ModelStatusSource;
  /** Route groups that live outside http/ (the operator console), registered after the API's. */
  extraRoutes?: (app: FastifyInstance) => Promise<unknown>;
  /** Capture for retraining; its review API is served when given. */
  capture?: CaptureService;
  /** Board layouts; without them `?layout=` and the layout routes are absent. */
  layouts?: LayoutStore;
}

/** Builds the HTTP app; it never listens (app.ts does, last, once everything else started). */
export async function buildServer({
  config,
  engine,
  metrics,
  logger,
  models,
  extraRoutes,
  capture,
  layouts,
}: ServerDeps): Promise<FastifyInstance> {
  // Typed as fastify's logger interface so route plugins stay generic over the logger.
  const loggerInstance: FastifyBaseLogger = logger.child({ component: 'http' });
  const app = Fastify({
    loggerInstance,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    requestTimeout: config.requestTimeoutMs,
    // Node checks request deadlines on this interval (30 s by default): slow senders must be cut
    // off near REQUEST_TIMEOUT_MS. No idle timeout on the socket: a frame may wait in the queue.
    // Cameras on loopback may omit Host; Node would answer that 400 itself, outside our error format.
    http: { connectionsCheckingInterval: 250, requireHostHeader: false },
    clientErrorHandler,
    routerOptions: { maxParamLength: 200 },
    // Our own hook answers 503 EDGE_ERR_NOT_READY while closing (fastify's would skip our error format).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  });
  registerErrorHandling(app);
  // Node answers an unknown `Expect` with a bare 417 unless someone listens; answer in our format.
  app.server.on('checkExpectation', (_req, res) => {
    const body = JSON.stringify({
      error: { code: ErrorCodes.BAD_REQUEST, message: 'unsupported Expect header' },
    });
    res.writeHead(417, { 'content-type': 'application/json', connection: 'close' }).end(body);
  });
  // Node's request timeout covers the head; a body trickled in a byte at a time is cut off here.
  app.addHook('onRequest', async (request) => {
    const raw = request.raw;
    if (raw.complete) return;
    const timer = setTimeout(() => {
      if (!raw.complete) raw.socket.destroy();
    }, config.requestTimeoutMs);
    timer.unref();
    raw.once('end', () => clearTimeout(timer));
    raw.once('close', () => clearTimeout(timer));
  });
  // Graceful stop: requests already accepted finish; new ones get 503, and every answer sent while
  // closing says `Connection: close`, because Node's close() only ends connections that are idle
  // at that moment and keep-alive clients would otherwise hold the server open until the deadline.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async () => {
    if (closing) throw new EdgeError(ErrorCodes.NOT_READY, 'the daemon is stopping');
  });
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const outcome = reply.errorCode ?? `${Math.floor(reply.statusCode / 100)}xx`;
    metrics.requests.inc({ route, outcome });
    metrics.requestDuration.observe({ route }, reply.elapsedTime / 1000);
  });
  await app.register(healthRoutes, { engine, models });
  await app.register(modelRoutes, { engine, models });
  await app.register(metricsRoute, { metrics });
  if (capture) await app.register(captureRoutes, { capture, apiToken: config.apiToken });
  await app.register(scoreRoutes, {
    engine,
    models,
    apiToken: config.apiToken,
    bodyLimitBytes: config.bodyLimitBytes,
    maxRegions: config.maxRegions,
    ...(layouts ? { layouts } : {}),
  });
  await extraRoutes?.(app);
  if (layouts) await app.register(layoutRoutes, { layouts, apiToken: config.apiToken });
  return app;
}
