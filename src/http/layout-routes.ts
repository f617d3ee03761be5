import type { FastifyPluginAsync } from 'fastify';
import { bearerGuard } from './auth.js';
import type { LayoutStore } from '../layouts/store.js';

export interface LayoutRouteOptions {
  layouts: LayoutStore;
  apiToken: string | undefined;
}

/** `PUT /v1/layouts/{name}`, `GET /v1/layouts`, `GET /v1/layouts/{name}` (README, "Board layouts"). */
export const layoutRoutes: FastifyPluginAsync<LayoutRouteOptions> = async (app, opts) => {
  const { layouts } = opts;
  if (opts.apiToken) app.addHook('onRequest', bearerGuard(opts.apiToken));
  app.get('/v1/layouts', async () => ({ layouts: layouts.list() }));
  app.get<{ Params: { name: string } }>('/v1/layouts/:name', async (request) => {
    const l = layouts.get(request.params.name);
    return { name: l.name, regions: l.regions };
  });
  app.put<{ Params: { name: string } }>('/v1/layouts/:name', async (request, reply) => {
    const { layout, created } = await layouts.put(request.params.name, request.body);
    return reply.code(created ? 201 : 200).send({ name: layout.name, regions: layout.regions.length });
  });
};
