import { readFile } from 'node:fs/promises';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  DEFAULT_MODEL_PATH,
  FIELDS,
  SCORING_FIELDS,
  loadConfig,
  type Config,
  type ExecutionProvider,
  type ScoringSettings,
} from '../../src/config.js';
import { ErrorCodes, type EdgeError } from '../../src/errors.js';
import { parseDesired } from '../../src/twin/desired.js';
import { configTable, replaceTable } from '../../scripts/config-docs.js';

function configError(env: Record<string, string>): EdgeError {
  try {
    loadConfig(env);
  } catch (err) {
    return err as EdgeError;
  }
  throw new Error('expected loadConfig to throw');
}

describe('loadConfig', () => {
  it('defaults serve the bundled model on loopback:8080, frozen', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      modelPath: DEFAULT_MODEL_PATH,
      apiToken: undefined,
    });
    expect(c.scoring).toEqual({
      executionProviders: ['tensorrt', 'cuda', 'cpu'],
      maxBatchSize: 8,
      maxBatchDelayMs: 2,
      workers: 1,
      maxQueue: 64,
      intraOpThreads: 0,
      intraOpSpinning: false,
    });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.scoring)).toBe(true);
  });

  it('has every field of the table, scoring ones nested; defaults are the values the daemon was built with', () => {
    const c = loadConfig({});
    const scoringKeys = Object.keys(SCORING_FIELDS);
    const topKeys = Object.keys(FIELDS).filter((k) => !scoringKeys.includes(k));
    expect(Object.keys(c).sort()).toEqual([...topKeys, 'modelPathSet', 'scoring', 'twinMode'].sort());
    expect(Object.keys(c.scoring).sort()).toEqual([...scoringKeys].sort());
    expect(c).toMatchObject({
      modelDownloadRetries: 5,
      modelDownloadBackoffMs: 1000,
      reportedRetryMs: 5000,
      telemetryJournalSyncMs: 50,
      telemetrySendTimeoutMs: 30_000,
      telemetryFlushTimeoutMs: 5000,
      desiredPropertiesPollMs: 1000,
      iothubBackoffInitialMs: 1000,
      twinMode: 'standalone',
    });
  });

  it('types each value by its schema, undefined only without a default', () => {
    expectTypeOf<Config['port']>().toEqualTypeOf<number>();
    expectTypeOf<Config['host']>().toEqualTypeOf<string>();
    expectTypeOf<Config['apiToken']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<Config['modelPath']>().toEqualTypeOf<string>();
    expectTypeOf<Config['modelUrlAllowlist']>().toEqualTypeOf<string[]>();
    expectTypeOf<Config['tensorrtFp16']>().toEqualTypeOf<boolean>();
    expectTypeOf<Config['logLevel']>().toEqualTypeOf<
      'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
    >();
    expectTypeOf<Config['scoring']>().toEqualTypeOf<ScoringSettings>();
    expectTypeOf<ScoringSettings['executionProviders']>().toEqualTypeOf<ExecutionProvider[]>();
    expectTypeOf<ScoringSettings['intraOpSpinning']>().toEqualTypeOf<boolean>();
  });

  it('parses lists, numbers and booleans', () => {
    const c = loadConfig({
      EXECUTION_PROVIDERS: ' CUDA , cpu',
      PORT: '0',
      INTRA_OP_SPINNING: 'yes',
      MAX_BATCH_DELAY_MS: '0.5',
    });
    expect(c.scoring.executionProviders).toEqual(['cuda', 'cpu']);
    expect(c.port).toBe(0);
    expect(c.scoring.intraOpSpinning).toBe(true);
    expect(c.scoring.maxBatchDelayMs).toBe(0.5);
    // URL prefixes keep their case; provider names do not.
    expect(
      loadConfig({ MODEL_URL_ALLOWLIST: ' HTTP://Models.local/ , file:///M/' }).modelUrlAllowlist,
    ).toEqual(['HTTP://Models.local/', 'file:///M/']);
  });

  it.each([
    [{ PORT: '70000' }, 'PORT="70000" is invalid: accepts an integer from 0 to 65535'],
    [{ PORT: 'eighty' }, 'PORT="eighty"'],
    [{ WORKERS: '0' }, 'WORKERS="0" is invalid: accepts an integer from 1 to 64'],
    [
      { EXECUTION_PROVIDERS: 'cuda,gpu' },
      'EXECUTION_PROVIDERS="cuda,gpu" is invalid: accepts a comma-separated list of values among tensorrt, cuda, cpu',
    ],
    [
      { LOG_LEVEL: 'verbose' },
      'LOG_LEVEL="verbose" is invalid: accepts one of fatal, error, warn, info, debug, trace, silent',
    ],
    [{ INTRA_OP_SPINNING: 'maybe' }, 'INTRA_OP_SPINNING="maybe" is invalid: accepts true or false'],
    [
      { INTRA_OP_SPINNING: 'constructor' },
      'INTRA_OP_SPINNING="constructor" is invalid: accepts true or false',
    ],
    [
      { EXECUTION_PROVIDERS: 'cpu,CPU' },
      'EXECUTION_PROVIDERS="cpu,CPU" is invalid: accepts a comma-separated list of values among tensorrt, cuda, cpu',
    ],
    [
      { MODEL_DOWNLOAD_RETRIES: '-1' },
      'MODEL_DOWNLOAD_RETRIES="-1" is invalid: accepts an integer from 0 to 100',
    ],
  ])('%o is refused with a message naming the variable', (env, message) => {
    const err = configError(env);
    expect(err.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(err.message).toContain(message);
  });

  it('reports every bad variable at once and never echoes a secret', () => {
    const err = configError({ PORT: '-1', API_TOKEN: 'short', MAX_QUEUE: '0' });
    expect(err.message).toContain('PORT=');
    expect(err.message).toContain('MAX_QUEUE=');
    expect(err.message).toContain('API_TOKEN=(redacted)');
    expect(err.message).not.toContain('short');
  });
});

describe("the twin's scoring block", () => {
  const ranged = Object.entries(SCORING_FIELDS).flatMap(([key, f]) =>
    'minimum' in f.schema ? [[key, f.env, f.schema.minimum, f.schema.maximum] as const] : [],
  );

  it.each(ranged)('%s has the range of %s', (key, env, min, max) => {
    expect(loadConfig({ [env]: String(max) }).scoring[key as keyof ScoringSettings]).toBe(max);
    expect(parseDesired({ scoring: { [key]: min } }).scoring).toEqual({ [key]: min });
    expect(configError({ [env]: String(max + 1) }).code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(() => parseDesired({ scoring: { [key]: max + 1 } })).toThrow(`/scoring/${key}`);
    expect(() => parseDesired({ scoring: { [key]: min - 1 } })).toThrow(`/scoring/${key}`);
  });

  it('accepts the execution providers the environment accepts', () => {
    expect(parseDesired({ scoring: { executionProviders: ['cuda', 'cpu'] } }).scoring).toEqual({
      executionProviders: ['cuda', 'cpu'],
    });
    for (const bad of [[], ['gpu'], ['cpu', 'cpu']]) {
      expect(() => parseDesired({ scoring: { executionProviders: bad } })).toThrow(
        '/scoring/executionProviders',
      );
    }
  });
});

describe('configuration reference', () => {
  it('README.md holds the table generated from the schema (npm run docs:config)', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    expect(readme).toContain(configTable());
    expect(replaceTable(readme)).toBe(readme);
  });
});
