import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { buildServer } from './http/server.js';
import { ScoringEngine } from './scoring/engine.js';
import { Metrics } from './telemetry/metrics.js';

export interface App {
  readonly config: Readonly<Config>;
  readonly engine: ScoringEngine;
  readonly metrics: Metrics;
  /** The bound address once started (port resolved when PORT=0). */
  readonly address: { host: string; port: number } | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Wires the components. Start order ends with the HTTP listen, so an open port means ready to
 * score; stop runs in reverse: close HTTP (503 to new requests, in-flight ones finish), drain
 * scoring and release the sessions. One failing step is logged while the others still run.
 */
export function createApp(config: Readonly<Config>, logger: Logger): App {
  const metrics = new Metrics();
  const engine = new ScoringEngine(config, logger, metrics);
  let server: FastifyInstance | undefined;
  let address: { host: string; port: number } | undefined;
  let stopping: Promise<void> | undefined;

  const step = async (name: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      logger.error({ component: 'app', step: name, err }, 'stop step failed');
    }
  };

  return {
    config,
    engine,
    metrics,
    get address() {
      return address;
    },
    async start() {
      await engine.start();
      server = await buildServer({ config, engine, metrics, logger });
      await server.listen({ host: config.host, port: config.port });
      const a = server.server.address();
      if (a && typeof a === 'object') address = { host: a.address, port: a.port };
      logger.info({ component: 'app', ...address, ready: engine.ready }, 'edge-scorer listening');
    },
    stop() {
      stopping ??= (async () => {
        await step('http', async () => {
          await server?.close();
        });
        await step('engine', () => engine.stop());
        logger.info({ component: 'app' }, 'edge-scorer stopped');
      })();
      return stopping;
    },
  };
}
