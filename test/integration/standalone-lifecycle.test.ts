import { createHash } from 'node:crypto';
import { readFile, writeFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { encodeFrame, solidFrame } from '../helpers/frames.js';
import { postFrame, request } from '../helpers/http.js';
import { desiredModel, versionedModel, waitFor } from '../helpers/lifecycle.js';
import { startModelServer, type ModelServer } from '../helpers/model-server.js';
import { corruptModel } from '../helpers/onnx-builder.js';

/**
 * Standalone mode: DESIRED_PROPERTIES_FILE plays the module twin through the same reconciler,
 * model fetcher, cache and hot swap as IoT Hub does.
 */

let server: ModelServer;
let daemon: Daemon | undefined;
let desiredFile: string;

interface ModelView {
  status: string;
  model: { manifest: { version: string }; sha256: string } | null;
}

const v1 = versionedModel('7');
const v2 = versionedModel('8');

async function activeVersion(d: Daemon): Promise<string | undefined> {
  const r = await request(`${d.url}/v1/model`);
  return (r.json as ModelView).model?.manifest.version;
}

async function reported(
  d: Daemon,
): Promise<Record<string, { status?: string; version?: string; lastError?: { code: string } | null }>> {
  return JSON.parse(await readFile(path.join(d.dir, 'data', 'reported.json'), 'utf8')) as Record<
    string,
    never
  >;
}

async function setDesired(doc: unknown): Promise<void> {
  await writeFile(desiredFile, typeof doc === 'string' ? doc : JSON.stringify(doc));
}

async function start(dir?: string, env: Record<string, string> = {}): Promise<Daemon> {
  return startDaemon({
    env: {
      DESIRED_PROPERTIES_FILE: desiredFile,
      MODEL_URL_ALLOWLIST: `${server.origin}/`,
      REPORTED_MIN_INTERVAL_MS: '0',
      ...env,
    },
    ...(dir ? { dir } : {}),
  });
}

const frame = await encodeFrame(solidFrame(32, 32, 3, 200), 32, 32, 3, 'png');

beforeEach(async () => {
  server = await startModelServer();
  daemon = undefined;
  desiredFile = path.join(tmpdir(), `edge-scorer-desired-${process.pid}-${Date.now()}.json`);
});

afterEach(async () => {
  await daemon?.stop();
  await server.close();
  await rm(desiredFile, { force: true });
});

describe('standalone desired-properties file', () => {
  it('a desired version change downloads, verifies, warms and swaps in the new model, and reports it', async () => {
    await setDesired({ model: desiredModel(server, v1) });
    daemon = await start();
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '7' ? true : undefined),
      'version 7 active',
    );
    const rep = await waitFor(async () => {
      const r = await reported(daemon!);
      return r.model?.status === 'active' && r.model.version === '7' ? r : undefined;
    }, 'reported active v1');
    expect(rep.desired, JSON.stringify(rep)).toMatchObject({ status: 'applied' });

    await setDesired({ model: desiredModel(server, v2) });
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '8' ? true : undefined),
      'version 8 active',
    );
    const after = await waitFor(async () => {
      const r = await reported(daemon!);
      return r.model?.version === '8' && r.model.status === 'active' ? r : undefined;
    }, 'reported active v2');
    expect(after.model).toMatchObject({ previousVersion: '7', lastError: null });
    const answer = await postFrame(`${daemon.url}/v1/score`, frame, 'image/png');
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ model: { name: 'line-classifier', version: '8' } });
  });

  it.each([
    [
      'bad sha256',
      () => desiredModel(server, v2, { sha256: 'ab'.repeat(32) }),
      'EDGE_ERR_MODEL_HASH_MISMATCH',
    ],
    [
      '404',
      () => ({ ...desiredModel(server, v2), url: server.url('/missing.onnx') }),
      'EDGE_ERR_MODEL_DOWNLOAD_FAILED',
    ],
    [
      'corrupt ONNX',
      () => {
        const bad = { ...v2, bytes: corruptModel(v2.bytes) };
        return desiredModel(server, { ...bad, sha256: sha(bad.bytes) });
      },
      'EDGE_ERR_MODEL_LOAD_FAILED',
    ],
    ['oversized file', () => desiredModel(server, v2, { sizeBytes: 100 }), 'EDGE_ERR_MODEL_TOO_LARGE'],
    [
      'disallowed URL',
      () => ({ ...desiredModel(server, v2), url: 'ftp://example.invalid/model.onnx' }),
      'EDGE_ERR_MODEL_URL_REFUSED',
    ],
    [
      'wrong input shape',
      () =>
        desiredModel(server, v2, {
          input: { width: 64, height: 64, resize: 'stretch', color: 'rgb', layout: 'nchw' },
        }),
      'EDGE_ERR_MODEL_SHAPE_MISMATCH',
    ],
  ])('%s leaves the old model serving and reports failed with %s', async (_name, block, code) => {
    await setDesired({ model: desiredModel(server, v1) });
    daemon = await start();
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '7' ? true : undefined),
      'version 7 active',
    );
    await setDesired({ model: block() });
    const rep = await waitFor(async () => {
      const r = await reported(daemon!);
      return r.model?.status === 'failed' ? r : undefined;
    }, `reported failed (${code})`);
    expect(rep.model?.lastError?.code).toBe(code);
    expect(rep.model?.version).toBe('7');
    expect(await activeVersion(daemon)).toBe('7');
    const answer = await postFrame(`${daemon.url}/v1/score`, frame, 'image/png');
    expect(answer.status).toBe(200);
    // Nothing of the failed attempt stays in the cache's temp area.
    expect(await readdir(path.join(daemon.dir, 'data', 'tmp'))).toEqual([]);
  });

  it('a change that failed for a retriable reason is retried on its own, with backoff, until it succeeds', async () => {
    await setDesired({ model: desiredModel(server, v1) });
    daemon = await start(undefined, { MODEL_RETRY_MS: '300' });
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '7' ? true : undefined),
      'version 7 active',
    );
    // The twin names a model whose upload has not finished: the server answers 404 twice.
    const block = desiredModel(server, v2);
    const file = new URL(block.url as string).pathname;
    server.serve(file, v2.bytes, { status: { code: 404, times: 2 } });
    await setDesired({ model: block });
    const failed = await waitFor(async () => {
      const r = await reported(daemon!);
      return r.model?.status === 'failed' ? r : undefined;
    }, 'reported failed');
    expect(failed.model).toMatchObject({
      version: '7',
      lastError: { code: 'EDGE_ERR_MODEL_DOWNLOAD_FAILED' },
    });
    expect(await activeVersion(daemon)).toBe('7');
    // No desired change and no twin event: the daemon retries (300 ms, then 600 ms) by itself.
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '8' ? true : undefined),
      'version 8 active after the retries',
    );
    const tries = server.requests.filter((r) => r.path === file);
    expect(tries.map((r) => r.status)).toEqual([404, 404, 200]);
    // reported.json is written after the swap: wait for it rather than read it once.
    const after = await waitFor(async () => {
      const r = await reported(daemon!);
      return r.model?.version === '8' && r.model.status === 'active' ? r : undefined;
    }, 'reported active v8');
    expect(after.model).toMatchObject({ lastError: null });
    // Once it succeeded nothing retries any more.
    await new Promise((r) => setTimeout(r, 1500));
    expect(server.requests.filter((r) => r.path === file)).toHaveLength(3);
  });

  it('an invalid desired document is reported as rejected and changes nothing', async () => {
    await setDesired({ model: desiredModel(server, v1) });
    daemon = await start();
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '7' ? true : undefined),
      'version 7 active',
    );
    for (const bad of [
      '{ not json',
      { model: desiredModel(server, v2), scorring: { workers: 2 } },
      { model: { ...desiredModel(server, v2), version: '../../etc' } },
      { scoring: { workers: 'many' } },
    ]) {
      await setDesired(bad);
      const rep = await waitFor(async () => {
        const r = await reported(daemon!);
        return r.desired?.status === 'rejected' ? r : undefined;
      }, 'desired rejected');
      expect(rep.desired?.lastError?.code).toBe('EDGE_ERR_DESIRED_INVALID');
      expect(await activeVersion(daemon)).toBe('7');
      // Reset to a valid document so the next bad one is a change again.
      await setDesired({ model: desiredModel(server, v1) });
      await waitFor(
        async () => ((await reported(daemon!)).desired?.status === 'applied' ? true : undefined),
        'applied',
      );
    }
  });

  it('a restart serves the last known good model from the cache before any desired state is read', async () => {
    await setDesired({ model: desiredModel(server, v2) });
    daemon = await start();
    await waitFor(
      async () => ((await activeVersion(daemon!)) === '8' ? true : undefined),
      'version 8 active',
    );
    const dir = daemon.dir;
    await daemon.app.stop();
    await server.close();
    // No model server any more, and the desired file is gone: the cache alone must serve.
    await writeFile(desiredFile, '');
    const again = await startDaemon({ dir, env: { MODEL_URL_ALLOWLIST: 'http://127.0.0.1/' } });
    try {
      expect(await activeVersion(again)).toBe('8');
      const answer = await postFrame(`${again.url}/v1/score`, frame, 'image/png');
      expect(answer.status).toBe(200);
    } finally {
      await again.stop();
      await daemon.stop();
      daemon = undefined;
      server = await startModelServer();
    }
  });
});

function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
