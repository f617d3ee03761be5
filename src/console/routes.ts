import { fileURLToPath } from 'node:url';
import type { ServerResponse } from 'node:http';
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { bearerGuard } from '../http/auth.js';
import { servingStatus, type ModelStatusSource } from '../http/model-routes.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { HealthSampler } from './health-sampler.js';
import type { LiveFeed } from './live-feed.js';
import type { ModelHistory } from './model-history.js';
import { withoutSecrets } from './model-history.js';
import type { HealthView, LiveFrame, ModelView } from './types.js';

/**
 * The page's bundle, built by `npm run build` (esbuild) into dist/console-page/. The same relative
 * path holds from src/console/ (tests) and dist/console/ (the package).
 */
export const PAGE_DIR = fileURLToPath(new URL('../../dist/console-page/', import.meta.url));

/** Nothing from outside the daemon: scripts, styles, images and connections are same-origin only. */
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** A comment line every 15 s keeps idle live connections open through proxies and timeouts. */
const KEEPALIVE_MS = 15_000;

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-scorer console</title>
<link rel="stylesheet" href="/console/app.css">
<script type="module" src="/console/app.js"></script>
</head>
<body><noscript>The edge-scorer console needs JavaScript.</noscript></body>
</html>
`;

export interface ConsoleRouteOptions {
  engine: ScoringEngine;
  models: ModelStatusSource;
  live: LiveFeed;
  health: HealthSampler;
  history: ModelHistory;
  /** The reported properties document as the daemon reports it now. */
  reported: () => Record<string, unknown>;
  twinMode: string;
  healthIntervalMs: number;
  apiToken: string | undefined;
}

function securityHeaders(reply: FastifyReply): void {
  reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
  reply.header('x-content-type-options', 'nosniff');
  reply.header('referrer-policy', 'no-referrer');
}

/**
 * The operator console (README, "Operator console"): the page at `/` and its assets, which hold no
 * data and need no token, and its API under /v1/console/, which follows the API's token rule.
 */
export const consoleRoutes: FastifyPluginAsync<ConsoleRouteOptions> = async (app, opts) => {
  app.addHook('onSend', async (_request, reply) => securityHeaders(reply));
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(INDEX_HTML));
  await app.register(fastifyStatic, {
    root: PAGE_DIR,
    prefix: '/console/',
    decorateReply: false,
    index: false,
    // The bundle's names do not change between builds: a page always revalidates.
    cacheControl: true,
    maxAge: 0,
  });
  await app.register(consoleApi, opts);
};

const consoleApi: FastifyPluginAsync<ConsoleRouteOptions> = async (app, opts) => {
  if (opts.apiToken) app.addHook('onRequest', bearerGuard(opts.apiToken));
  const streams = new Set<ServerResponse>();
  // Live connections never end by themselves: end them so the server's close does not wait. Each
  // is sent with `Connection: close`, so an ended stream also closes its socket; otherwise the
  // client could keep it as an idle keep-alive connection that the server's close waits out.
  app.addHook('preClose', async () => {
    for (const res of streams) res.end();
  });

  app.get('/v1/console/model', async (): Promise<ModelView> => {
    const { model } = opts.engine.state;
    const { lastError, waitingReason } = opts.models;
    return {
      status: servingStatus(opts.engine, opts.models),
      model: model
        ? {
            name: model.manifest.name,
            version: model.manifest.version,
            task: model.manifest.task,
            sha256: model.sha256,
            executionProvider: model.executionProvider,
            loadedAt: model.loadedAt,
          }
        : null,
      lastError: lastError ? { code: lastError.code, message: lastError.message } : null,
      ...(waitingReason && !model ? { reason: waitingReason } : {}),
      history: opts.history.history,
      desired: opts.history.lastDesired,
      reported: withoutSecrets(opts.reported()),
    };
  });

  app.get('/v1/console/health', async (): Promise<HealthView> => ({
    intervalMs: opts.healthIntervalMs,
    twinMode: opts.twinMode,
    samples: opts.health.history,
  }));

  app.get<{ Querystring: { camera?: string } }>('/v1/console/live', (request, reply) => {
    const camera =
      typeof request.query.camera === 'string' && request.query.camera ? request.query.camera : undefined;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'close',
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
    });
    res.write(': live\n\n');
    streams.add(res);
    // A page that cannot keep up skips frames until its socket drains; it never queues a backlog.
    let congested = false;
    res.on('drain', () => (congested = false));
    const remove = opts.live.add({
      camera,
      send(frame: LiveFrame) {
        if (congested || res.writableEnded) return;
        congested = !res.write(`event: frame\ndata: ${JSON.stringify(frame)}\n\n`);
      },
    });
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
    keepalive.unref();
    res.on('close', () => {
      clearInterval(keepalive);
      streams.delete(res);
      remove();
    });
  });
};
