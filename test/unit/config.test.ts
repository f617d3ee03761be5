import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MODEL_PATH, loadConfig } from '../../src/config.js';
import { ErrorCodes, type EdgeError } from '../../src/errors.js';
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

describe('configuration reference', () => {
  it('README.md holds the table generated from the schema (npm run docs:config)', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    expect(readme).toContain(configTable());
    expect(replaceTable(readme)).toBe(readme);
  });
});
