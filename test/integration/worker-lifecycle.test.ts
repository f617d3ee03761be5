import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceWorker } from '../../src/scoring/inference-worker.js';
import { buildSlowModel, writeModelDir } from '../helpers/onnx-builder.js';
import { loadRuntime } from '../helpers/runtime.js';

/**
 * An inference worker closed while its onnxruntime session is still being created (a model load
 * cancelled by a newer twin version, or a runtime closed while a crashed worker's replacement
 * loads) must end cleanly. It used to abort the whole process from onnxruntime's native code: the
 * worker answered the close at once and its thread was terminated under the session being made.
 */

let dir: string;
let modelPath: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'worker-lifecycle-'));
  const manifest = { name: 'slow', version: '1', labels: ['ok', 'defect'], defectLabels: ['defect'] };
  ({ modelPath } = await writeModelDir(
    path.join(dir, 'model'),
    buildSlowModel({ batch: 'dynamic', size: 128, depth: 8 }),
    manifest,
  ));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const LOAD = { providers: ['cpu'], deviceId: 0, intraOpThreads: 1, spinning: false };

describe('closing an inference worker while its model loads', () => {
  it('a worker closed at any moment of its load ends, and its load settles', async () => {
    for (const delayMs of [0, 1, 3, 6, 10, 20, 40]) {
      const worker = new InferenceWorker('lifecycle');
      const loading = worker.load({ modelPath, ...LOAD }).then(
        (model) => model.provider,
        (err: Error) => err.message,
      );
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      await worker.close();
      expect(worker.dead).toBe(true);
      // Either the session was made (then released by the close) or the load failed with the
      // worker: never a load left hanging.
      expect(await loading).toMatch(/^cpu$|inference worker/);
    }
  });

  it('a model load cancelled while its sessions are being created rejects with CANCELLED', async () => {
    for (const delayMs of [0, 2, 5, 10, 20]) {
      const abort = new AbortController();
      const loading = loadRuntime(modelPath, { workers: 2, maxBatchSize: 4, maxQueue: 16 }, abort.signal);
      setTimeout(() => abort.abort(), delayMs);
      await expect(loading).rejects.toMatchObject({ code: 'EDGE_ERR_CANCELLED' });
    }
  });
});
