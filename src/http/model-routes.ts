import type { FastifyPluginAsync } from 'fastify';
import type { EngineStatus, ScoringEngine } from '../scoring/engine.js';

/** What the HTTP routes read of the model lifecycle, which owns a model's status and last error. */
export interface ModelStatusSource {
  readonly lastError: { code: string; message: string } | null;
  /** Why no model serves yet, when that is by design (waiting for the twin's model). */
  readonly waitingReason: string | undefined;
  /** No model serves because loading one failed. */
  readonly failedWithoutModel: boolean;
}

export type ServingStatus = EngineStatus | 'failed';

/** The engine's status, or `failed` while no model serves because the last load failed. */
export function servingStatus(engine: ScoringEngine, models: ModelStatusSource): ServingStatus {
  const { status } = engine.state;
  return status === 'starting' && models.failedWithoutModel ? 'failed' : status;
}

/** GET /v1/model: the active model, where it runs, and why the last load failed if it did. */
export const modelRoutes: FastifyPluginAsync<{ engine: ScoringEngine; models: ModelStatusSource }> = async (
  app,
  { engine, models },
) => {
  app.get('/v1/model', async () => {
    const { model } = engine.state;
    const { lastError, waitingReason } = models;
    return {
      status: servingStatus(engine, models),
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
      ...(waitingReason && !model ? { reason: waitingReason } : {}),
    };
  });
};
