import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { FrameResult } from '../telemetry/publisher.js';
import { EdgeError, ErrorCodes } from '../errors.js';
import { registerErrorHandling } from './errors.js';
import { healthRoutes } from './health-routes.js';
import { metricsRoute } from './metrics-route.js';
import { modelRoutes } from './model-routes.js';
import { scoreRoutes } from './score-routes.js';

export interface ServerDeps {
  config: Readonly<Config>;
  engine: ScoringEngine;
  metrics: Metrics;
  logger: Logger;
  onResult?: ((r: FrameResult) => void) | undefined;
}

/** Builds the HTTP app; it never listens (app.ts does, last, once everything else started). */
export async function buildServer({
  config,
  engine,
  metrics,
  logger,
  onResult,
}: ServerDeps): Promise<FastifyInstance> {
  // Typed as fastify's logger interface so route plugins stay generic over the logger.
  const loggerInstance: FastifyBaseLogger = logger.child({ component: 'http' });
  const app = Fastify({
    loggerInstance,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    requestTimeout: config.requestTimeoutMs,
    connectionTimeout: config.requestTimeoutMs,
    routerOptions: { maxParamLength: 200 },
    // Our own hook answers 503 EDGE_ERR_NOT_READY while closing (fastify's would skip our error format).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  });
  registerErrorHandling(app);
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
  await app.register(healthRoutes, { engine });
  await app.register(modelRoutes, { engine });
  await app.register(metricsRoute, { metrics });
  await app.register(scoreRoutes, {
    engine,
    onResult,
    apiToken: config.apiToken,
    bodyLimitBytes: config.bodyLimitBytes,
  });
  return app;
}
