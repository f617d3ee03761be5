import type { ScoringEngine } from '../scoring/engine.js';
import type { MethodHandler } from './iothub-connection.js';
import type { ModelManager } from '../models/manager.js';
import type { DesiredStateReconciler } from './reconciler.js';
import type { ReportedProperties } from './reported.js';

/**
 * Direct methods: `getStatus`, `reloadModel`, `rollback`. Answers carry the model report, so an
 * operator invoking a method from the portal sees the outcome without reading the twin.
 */
export function directMethods(deps: {
  engine: ScoringEngine;
  manager: ModelManager;
  reconciler: DesiredStateReconciler;
  reported: ReportedProperties;
}): Record<string, MethodHandler> {
  const { engine, manager, reconciler, reported } = deps;
  return {
    getStatus: async () => ({
      status: 200,
      payload: { ready: engine.ready, ...reported.document, model: manager.status },
    }),
    reloadModel: async () => {
      await reconciler.reloadModel();
      const model = manager.status;
      return { status: model.status === 'active' ? 200 : 500, payload: { model } };
    },
    rollback: async () => {
      const result = await manager.rollback();
      const model = manager.status;
      if (result.ok) return { status: 200, payload: { model } };
      const status = result.error?.code === 'EDGE_ERR_NOT_FOUND' ? 404 : 500;
      return { status, payload: { error: result.error, model } };
    },
  };
}
