import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ModelStatusSource } from '../http/model-routes.js';
import type { ScoringEngine } from '../scoring/engine.js';
import type { Metrics } from '../telemetry/metrics.js';
import { HealthSampler } from './health-sampler.js';
import { LiveFeed } from './live-feed.js';
import { ModelHistory } from './model-history.js';
import { consoleRoutes } from './routes.js';

/** Live view: frames per second and camera at most, and the thumbnails' width (pixels). */
export const LIVE_MAX_FPS = 2;
export const LIVE_MAX_WIDTH = 640;
/** Health charts: one sample every 2 s, the last 10 minutes. */
export const HEALTH_INTERVAL_MS = 2000;
export const HEALTH_KEEP = 300;

export interface ConsoleDeps {
  config: Readonly<Config>;
  engine: ScoringEngine;
  metrics: Metrics;
  logger: Logger;
  reported: () => Record<string, unknown>;
}

export interface Console {
  readonly history: ModelHistory;
  readonly live: LiveFeed;
  readonly health: HealthSampler;
  /** The page and its API; `models` is the model lifecycle (the owner of status and last error). */
  readonly routes: FastifyPluginAsync<{ models: ModelStatusSource }>;
  start(): void;
  stop(): void;
}

/** Where a page reaches the console, for the start-up line: a wildcard bind is shown as localhost. */
export function consoleUrl({ host, port }: { host: string; port: number }): string {
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return `http://${shown}:${port}/`;
}

/**
 * The operator console's parts (README, "Operator console"; docs/architecture.md): the live feed
 * (a scored-frame stream subscriber while a page is open), the health sampler, the model history,
 * and their routes. app.ts wires it; it holds no state another component owns.
 */
export function createConsole({ config, engine, metrics, logger, reported }: ConsoleDeps): Console {
  const history = new ModelHistory();
  const live = new LiveFeed({
    frames: engine.frames,
    logger,
    maxFps: LIVE_MAX_FPS,
    maxWidth: LIVE_MAX_WIDTH,
  });
  const health = new HealthSampler({ metrics, logger, intervalMs: HEALTH_INTERVAL_MS, keep: HEALTH_KEEP });
  const routes: FastifyPluginAsync<{ models: ModelStatusSource }> = async (app, { models }) => {
    await app.register(consoleRoutes, {
      engine,
      models,
      live,
      health,
      history,
      reported,
      twinMode: config.twinMode,
      healthIntervalMs: HEALTH_INTERVAL_MS,
      apiToken: config.apiToken,
    });
  };
  return {
    history,
    live,
    health,
    routes,
    start() {
      live.start();
      health.start();
    },
    stop() {
      live.stop();
      health.stop();
    },
  };
}
