import type { FastifyPluginAsync } from 'fastify';
import type { ScoringEngine } from '../scoring/engine.js';
import { servingStatus, type ModelStatusSource } from './model-routes.js';

/** Open Inference Protocol health paths: live = the process answers, ready = a warmed model is active. */
export const healthRoutes: FastifyPluginAsync<{ engine: ScoringEngine; models: ModelStatusSource }> = async (
  app,
  { engine, models },
) => {
  app.get('/v2/health/live', async () => ({ live: true }));
  app.get('/v2/health/ready', async (_request, reply) => {
    const status = servingStatus(engine, models);
    return reply.code(engine.ready ? 200 : 503).send({ ready: engine.ready, status });
  });
};
