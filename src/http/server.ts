import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { FrameResult } from '../telemetry/publisher.js';
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
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  registerErrorHandling(app);
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
