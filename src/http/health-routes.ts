import type { FastifyPluginAsync } from 'fastify';
import type { ScoringEngine } from '../scoring/engine.js';

/** Open Inference Protocol health paths: live = the process answers, ready = a warmed model is active. */
export const healthRoutes: FastifyPluginAsync<{ engine: ScoringEngine }> = async (app, { engine }) => {
  app.get('/v2/health/live', async () => ({ live: true }));
  app.get('/v2/health/ready', async (_request, reply) => {
    const { status } = engine.state;
    return reply.code(engine.ready ? 200 : 503).send({ ready: engine.ready, status });
  });
};
