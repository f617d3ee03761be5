#!/usr/bin/env node
import { loadConfig } from './config.js';
import { createApp } from './app.js';
import { isEdgeError } from './errors.js';
import { createLogger, terminalDestination } from './logger.js';
import { modelPatchCli } from './cli/model-patch.js';
import { rolloutCli } from './cli/rollout.js';

/** Process concerns only: configuration errors, signals, exit codes, fatal handlers. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    const message = isEdgeError(err) ? err.message : String(err);
    process.stderr.write(`edge-scorer: invalid configuration: ${message}\n`);
    process.exit(78); // EX_CONFIG
  }
  const logger = createLogger(config, await terminalDestination());
  const app = createApp(config, logger);

  /**
   * Exits now, even while an inference runs: process.exit() would tear down the worker threads
   * under onnxruntime, whose binding then aborts the process (SIGABRT, a core dump). A SIGKILL
   * of ourselves ends the process at once; the orchestrator sees 137, as for any forced stop.
   */
  const forceExit = (): never => {
    process.kill(process.pid, 'SIGKILL');
    throw new Error('unreachable');
  };

  let signals = 0;
  const shutdown = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ component: 'main', signal }, 'second signal: exiting now');
      forceExit();
    }
    logger.info({ component: 'main', signal }, 'stopping');
    const deadline = setTimeout(() => {
      logger.error({ component: 'main', timeoutMs: config.shutdownTimeoutMs }, 'graceful stop timed out');
      forceExit();
    }, config.shutdownTimeoutMs);
    deadline.unref();
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ component: 'main', err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('unhandledRejection', (err) => {
    logger.fatal({ component: 'main', err }, 'unhandled rejection');
    process.exit(70);
  });
  process.on('uncaughtException', (err) => {
    logger.fatal({ component: 'main', err }, 'uncaught exception');
    process.exit(70);
  });

  try {
    await app.start();
  } catch (err) {
    logger.fatal({ component: 'main', err }, 'start failed');
    setTimeout(forceExit, config.shutdownTimeoutMs).unref();
    await app.stop();
    process.exit(1);
  }
}

if (process.argv[2] === 'model-patch') {
  process.exitCode = await modelPatchCli(process.argv.slice(3));
} else if (process.argv[2] === 'rollout') {
  process.exitCode = await rolloutCli(process.argv.slice(3));
} else {
  await main();
}
