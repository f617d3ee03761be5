import type { FastifyPluginAsync } from 'fastify';
import type { ScoringEngine } from '../scoring/engine.js';

/** GET /v1/model: the active model, where it runs, and why the last load failed if it did. */
export const modelRoutes: FastifyPluginAsync<{ engine: ScoringEngine }> = async (app, { engine }) => {
  app.get('/v1/model', async () => {
    const { status, model, lastError } = engine.state;
    return {
      status,
      model: model
        ? {
            manifest: model.manifest,
            sha256: model.sha256,
            sizeBytes: model.sizeBytes,
            executionProvider: model.executionProvider,
            providerAttempts: model.providerAttempts,
            inputs: model.inputs,
            outputs: model.outputs,
            dynamicBatch: model.dynamicBatch,
            maxBatchSize: model.maxBatchSize,
            loadedAt: model.loadedAt,
            loadMs: Math.round(model.loadMs),
          }
        : null,
      lastError: lastError ? { code: lastError.code, message: lastError.message } : null,
    };
  });
};
