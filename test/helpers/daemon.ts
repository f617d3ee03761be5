import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createApp, type App } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { testClassifier } from './lifecycle.js';
import { writeModelDir } from './onnx-builder.js';

export interface Daemon {
  app: App;
  url: string;
  dir: string;
  /** Captured log lines (parsed JSON), for tests that assert on logs. */
  logs: Record<string, unknown>[];
  stop(): Promise<void>;
}

export interface DaemonOptions {
  /** Environment overrides (strings, as the daemon would read them). */
  env?: Record<string, string>;
  /** A model to serve instead of the default test classifier; written to the temp dir. */
  model?: Uint8Array;
  manifest?: object;
  /** Reuse this directory (a restart with the same DATA_DIR); it is then left in place on stop. */
  dir?: string;
}

export const TEST_LABELS = ['ok', 'bridge', 'missing'];

/** A 3-class classifier over 32×32 RGB frames with a dynamic batch, and its manifest. */
export function defaultTestModel(): { model: Uint8Array; manifest: object } {
  return {
    model: testClassifier(),
    manifest: {
      name: 'test-classifier',
      version: '1',
      task: 'classification',
      labels: TEST_LABELS,
      defectLabels: ['bridge', 'missing'],
      input: { width: 32, height: 32, resize: 'stretch', color: 'rgb', layout: 'nchw', scale: 1 / 255 },
      output: { format: 'logits', topK: 3 },
    },
  };
}

/** The configuration of a test daemon: loopback, an ephemeral port, CPU, data under `dir`. */
export function testConfig(
  dir: string,
  modelPath: string,
  env: Record<string, string> = {},
): Readonly<Config> {
  return loadConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    DATA_DIR: path.join(dir, 'data'),
    MODEL_PATH: modelPath,
    EXECUTION_PROVIDERS: 'cpu',
    INTRA_OP_THREADS: '1',
    LOG_LEVEL: 'info',
    ...env,
  });
}

/**
 * Starts a whole daemon in-process on 127.0.0.1 with an ephemeral port and its own temp dir.
 * Callers stop it (usually in afterEach); stop() also removes the temp dir.
 */
export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(path.join(tmpdir(), 'edge-scorer-test-')));
  const fallback = defaultTestModel();
  const { modelPath } = await writeModelDir(
    path.join(dir, 'model'),
    opts.model ?? fallback.model,
    opts.model ? opts.manifest : (opts.manifest ?? fallback.manifest),
  );
  // The IoT Hub SDK reads IOTEDGE_* from process.env itself; set them for this daemon's lifetime.
  const sdkEnv = Object.entries(opts.env ?? {}).filter(([k]) => k.startsWith('IOTEDGE_'));
  const saved = sdkEnv.map(([k]) => [k, process.env[k]] as const);
  for (const [k, v] of sdkEnv) process.env[k] = v;
  const config = testConfig(dir, modelPath, opts.env);
  const logs: Record<string, unknown>[] = [];
  const logger = pino(
    { level: config.logLevel },
    { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const app = createApp(config, logger);
  await app.start();
  const { port } = app.address!;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    dir,
    logs,
    async stop() {
      await app.stop();
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
